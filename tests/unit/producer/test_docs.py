"""The /docs page loads nothing from another host: Redoc comes from the producer."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from flask.testing import FlaskClient


class References(HTMLParser):
    """Every URL a page names in a `src`, `href` or `spec-url` attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]


def references(client: FlaskClient, path: str) -> list[str]:
    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    parser = References()
    parser.feed(page.get_data(as_text=True))
    return parser.urls


def test_the_docs_page_names_no_other_host(client: FlaskClient) -> None:
    urls = references(client, "/docs")
    assert urls, "the page loads nothing: the test proves nothing"
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme in ("", "data") and not parts.netloc, url


def test_everything_the_docs_page_loads_is_served_here(client: FlaskClient) -> None:
    # Resolved as a browser resolves them against http://localhost/docs.
    paths = [
        urlsplit(urljoin("http://localhost/docs", url)).path
        for url in references(client, "/docs")
        if not url.startswith("data:")
    ]
    assert set(paths) == {"/openapi.json", "/docs/redoc.standalone.js"}
    for path in paths:
        assert client.get(path).status_code == 200, path


def test_redoc_is_served_with_its_licence_header_and_notices(client: FlaskClient) -> None:
    script = client.get("/docs/redoc.standalone.js")
    assert script.mimetype == "text/javascript"
    header = script.get_data(as_text=True).splitlines()[0]
    assert header == "/*! For license information please see redoc.standalone.js.LICENSE.txt */"
    notices = client.get("/docs/redoc.standalone.js.LICENSE.txt")
    assert notices.status_code == 200 and notices.mimetype == "text/plain"
    assert 'Version: "2.1.5"' in notices.get_data(as_text=True)


def test_redoc_is_revalidated_not_sent_again(client: FlaskClient) -> None:
    first = client.get("/docs/redoc.standalone.js")
    assert first.headers["Cache-Control"] == "no-cache" and first.headers["ETag"]
    again = client.get(
        "/docs/redoc.standalone.js", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304 and again.get_data() == b""


def test_the_docs_page_lets_the_browser_load_nothing_from_another_origin(
    client: FlaskClient,
) -> None:
    policy = client.get("/docs").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "connect-src", "worker-src"):
        sources = directives[name].split()
        assert set(sources) <= {"'self'", "'unsafe-inline'", "data:", "blob:"}, name

"""`/docs`: the API reference page, Redoc rendering `/openapi.json`.

Everything the page loads is served by the producer itself: Redoc's standalone bundle
is package data in `producer_service/static/` (Redoc 2.1.5 from the npm registry, as
published; its licence and the notices its header points to lie beside it), so the page
works without reaching any other host.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from flask import Blueprint, Response, request

bp = Blueprint("docs", __name__)

REDOC = "redoc.standalone.js"
# What the bundle's first line points to for the licences of the code it includes.
REDOC_NOTICES = "redoc.standalone.js.LICENSE.txt"

# Paths are relative to /docs, so the page also works behind a proxy's path prefix.
DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>User-activity producer API</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <!-- An empty icon: otherwise the browser asks for /favicon.ico and logs the 404. -->
  <link rel="icon" href="data:,">
</head>
<body>
  <redoc spec-url="openapi.json"></redoc>
  <script src="docs/{REDOC}"></script>
</body>
</html>
"""


# The browser may load nothing from another origin. Redoc's bundle injects its styles
# inline and runs its search index in a worker made from a blob: URL. Its sidebar footer
# links a logo on Redocly's CDN: refused here, and Redoc then leaves it out.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/docs")
def page() -> Response:
    response = Response(DOCS_PAGE, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    return response


@bp.get(f"/docs/{REDOC}")
def redoc() -> Response:
    return _serve(REDOC, "text/javascript")


@bp.get(f"/docs/{REDOC_NOTICES}")
def redoc_notices() -> Response:
    return _serve(REDOC_NOTICES, "text/plain")


@functools.cache
def _static(name: str) -> tuple[bytes, str]:
    # Read and hashed once per process: the bundle is 900 KB, and hashing it for the ETag
    # on every request would cost more than sending it.
    data = (resources.files("producer_service") / "static" / name).read_bytes()
    return data, hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _serve(name: str, mimetype: str) -> Response:
    data, etag = _static(name)
    response = Response(data, mimetype=mimetype)
    # Revalidated on every load (ETag): an upgraded producer's page never runs an old bundle.
    response.headers["Cache-Control"] = "no-cache"
    response.set_etag(etag)
    response.make_conditional(request)
    return response

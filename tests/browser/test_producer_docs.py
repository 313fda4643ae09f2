"""The producer's /docs page in headless Chromium: Redoc, served by the producer itself,
renders the API reference, and the page reaches no other host (its Content-Security-Policy
allows only the producer's own origin, so the browser would report any attempt)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from producer_service import create_app
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from tests.unit.producer.fakes import InMemoryEventPublisher

from .helpers import ServedApp


@pytest.fixture
def producer_url() -> Iterator[str]:
    settings = ProducerSettings(common=CommonSettings(kafka_topic="docs-page-events"))
    with ServedApp(create_app(settings, publisher=InMemoryEventPublisher())) as served:
        yield served.url


def test_docs_render_every_route_from_the_producer_alone(
    browser: webdriver.Chrome, producer_url: str
) -> None:
    browser.get(f"{producer_url}/docs")
    WebDriverWait(browser, 20).until(
        lambda d: "/events/batch" in d.find_element(By.TAG_NAME, "body").text
    )
    text = browser.find_element(By.TAG_NAME, "body").text
    for path in ("/events/generate", "/events/batch"):
        assert path in text
    origin = browser.execute_script("return location.origin")
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => ({name: e.name, "
        "responseStatus: e.responseStatus, transferSize: e.transferSize}))"
    )
    assert loaded, "the page loaded nothing: the check below would prove nothing"
    # An entry the policy refused never reached the network: no status, no bytes.
    fetched_elsewhere = [
        entry["name"]
        for entry in loaded
        if not entry["name"].startswith(origin)
        and (entry["responseStatus"] != 0 or entry["transferSize"] != 0)
    ]
    assert fetched_elsewhere == []
    # Redoc's footer asks for a logo on its vendor's CDN; the policy refuses it before any
    # request is made. That refusal is the only error the page may show.
    problems = [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and "Content Security Policy" not in e["message"]
    ]
    assert problems == []

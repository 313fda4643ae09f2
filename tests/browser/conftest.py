"""A real consumer read API on a real port, pointed at this test's own topic, group and
key prefix, and a fresh headless Chromium to look at its dashboard."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from selenium import webdriver

from consumer_service.api import create_app
from consumer_service.api.dashboard.views import state_of
from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from tests.conftest import ROOT, file_lock
from tests.integration.consumer.conftest import (  # noqa: F401
    make_store,
    settings,
    start_worker,
)

from .helpers import ServedApp, chromium, missing_browser, try_install


@pytest.fixture(scope="session")
def browser_available() -> None:
    # One install at a time: each pytest-xdist worker runs this fixture, and of two
    # apt-gets at once the one that finds dpkg locked would fail and its tests skip.
    with file_lock(ROOT / ".local" / "browser-install.lock"):
        if missing_browser() is not None:
            try_install()
    reason = missing_browser()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def browser(browser_available: None) -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def read_api(
    settings: ConsumerSettings,  # noqa: F811
    make_store: Callable[..., RedisEventStore],  # noqa: F811
) -> Iterator[str]:
    """The base URL of the read API (dashboard included) over the real Redis and Kafka."""
    app = create_app(settings, make_store(settings))
    try:
        with ServedApp(app) as served:
            yield served.url
    finally:
        state_of(app).close()

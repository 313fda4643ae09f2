"""The dashboard in a real headless Chromium: it loads with nothing on the console, asks
no other origin, and real traffic through a real worker moves what it shows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from consumer_service.api import create_app
from consumer_service.api.dashboard.views import state_of
from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from tests.conftest import TEST_PARTITIONS
from tests.integration.consumer.conftest import Raw, WorkerThread, make_record, produce

from .helpers import ServedApp

# Installing Chromium on first use (root on Debian, like infra/redis.sh) can take minutes;
# every wait below has its own, much shorter bound.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def data(driver: webdriver.Chrome, element_id: str, name: str = "value") -> str:
    return str(driver.find_element(By.ID, element_id).get_attribute(f"data-{name}") or "")


def number(driver: webdriver.Chrome, element_id: str, name: str = "value") -> float:
    text = data(driver, element_id, name)
    return float(text) if text else -1.0


def rows(driver: webdriver.Chrome, table_id: str, attribute: str) -> list[str]:
    """The `data-<attribute>` of each row of a table's body (placeholder rows have none)."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(r => r.getAttribute(arguments[1])).filter(v => v !== null)",
        f"#{table_id} tbody tr",
        f"data-{attribute}",
    )
    return [str(v) for v in found]


def owned_partitions(driver: webdriver.Chrome) -> list[int]:
    """The partitions the members table lists, all members together, sorted."""
    owned = driver.execute_script(
        "return Array.from(document.querySelectorAll('#members tbody tr[data-client-id]'))"
        ".map(r => r.cells[2].textContent)"
    )
    return sorted(int(p) for cell in owned for p in cell.split(", ") if p != "none")


def polls(driver: webdriver.Chrome) -> int:
    return int(number(driver, "status", "polls"))


def wait_for(
    driver: webdriver.Chrome, condition: Callable[[], Any], timeout: float, what: str
) -> None:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda _: condition())
    except TimeoutException:
        pytest.fail(f"the page did not show {what} within {timeout} s; it shows: {shown(driver)}")


def shown(driver: webdriver.Chrome) -> dict[str, str]:
    ids = ("status", "processed", "produced", "duplicates", "dead-lettered", "total-lag")
    texts = {i: driver.find_element(By.ID, i).text for i in ids}
    for table in ("lag", "members"):
        texts[table] = driver.find_element(By.ID, table).text
    return texts


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_page_loads_with_no_console_errors_and_nothing_from_elsewhere(
    browser: webdriver.Chrome, read_api: str, settings: ConsumerSettings
) -> None:
    browser.get(f"{read_api}/dashboard")
    assert browser.title == "Consumer dashboard"
    # Three rounds of polling and drawing, so a script error in any of them shows up.
    wait_for(browser, lambda: polls(browser) >= 3, 20, "three updates")

    assert browser.find_element(By.ID, "topic").text == settings.common.kafka_topic
    assert browser.find_element(By.ID, "group").text == settings.consumer_group
    assert rows(browser, "lag", "partition") == [str(p) for p in range(TEST_PARTITIONS)]
    assert data(browser, "processed") == "0"
    assert data(browser, "produced") == "0"
    assert number(browser, "redis-memory") > 0
    assert browser.find_element(By.ID, "problems").is_displayed() is False
    assert console_errors(browser) == []
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert fetched, "the page loaded no assets at all"
    elsewhere = [url for url in fetched if not url.startswith(f"{read_api}/dashboard")]
    assert elsewhere == [], "the dashboard must work offline: everything from its own replica"


def test_traffic_moves_the_numbers_on_the_page(
    browser: webdriver.Chrome,
    read_api: str,
    settings: ConsumerSettings,
    start_worker: Callable[..., WorkerThread],
) -> None:
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    start_worker(settings)
    browser.get(f"{read_api}/dashboard")
    wait_for(
        browser,
        lambda: (
            len(rows(browser, "members", "client-id")) == 1
            and owned_partitions(browser) == list(range(TEST_PARTITIONS))
        ),
        60,
        "the worker as the group's only member, owning every partition",
    )
    wait_for(browser, lambda: polls(browser) >= 2, 20, "two updates")
    assert data(browser, "processed") == "0"
    assert number(browser, "chart-in", "peak") == 0
    assert number(browser, "chart-out", "peak") == 0

    events = [make_record(user_id=f"user-{i % 7}") for i in range(60)]
    again = dict(events[0])  # the same eventId in a second record: a duplicate
    produce(bootstrap, topic, [*events, again, Raw(key=b"user-x", value=b"not json {")])
    expected_records = len(events) + 2

    wait_for(browser, lambda: data(browser, "produced") == str(expected_records), 30, "produced")
    wait_for(browser, lambda: data(browser, "processed") == str(len(events)), 30, "processed")
    wait_for(browser, lambda: data(browser, "duplicates") == "1", 30, "one duplicate")
    wait_for(browser, lambda: data(browser, "dead-lettered") == "1", 30, "one dead letter")
    wait_for(browser, lambda: rows(browser, "dead-reasons", "reason") == ["not_json"], 10, "reason")
    # The worker commits after each batch: the lag drains to zero on every partition.
    wait_for(browser, lambda: data(browser, "total-lag") == "0", 30, "no lag")
    assert rows(browser, "lag", "lag") == ["0"] * TEST_PARTITIONS
    assert number(browser, "chart-in", "peak") > 0, "events in never rose above 0/s"
    assert number(browser, "chart-out", "peak") > 0, "events out never rose above 0/s"

    # The recent list is the store's newest 20, newest first: what the read API, an
    # independent path, lists last.
    stored = requests.get(f"{read_api}/events/processed", params={"limit": 1000}, timeout=5)
    newest = [e["eventId"] for e in reversed(stored.json()["events"])][:20]
    wait_for(browser, lambda: rows(browser, "recent", "event-id") == newest, 10, "the newest")

    # A second replica joins: the page shows both members sharing the partitions, each
    # partition owned once. (Lag is not checked from here on: a commit the worker makes
    # during the rebalance may be refused until its next batch.)
    start_worker(settings)
    wait_for(
        browser,
        lambda: (
            len(rows(browser, "members", "client-id")) == 2
            and owned_partitions(browser) == list(range(TEST_PARTITIONS))
        ),
        60,
        "both workers as members, sharing the partitions",
    )
    assert console_errors(browser) == []


@pytest.fixture
def guarded_read_api(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]
) -> Iterator[str]:
    """The read API with API keys: one granting events:read, one only events:erase."""
    guarded = replace(settings, api_keys=("reader events:read", "eraser events:erase"))
    app = create_app(guarded, make_store(guarded))
    try:
        with ServedApp(app) as served:
            yield served.url
    finally:
        state_of(app).close()


def refusals(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Console errors other than the browser's own note of a 401 or 403 answer."""
    return [
        e
        for e in console_errors(driver)
        if "status of 401" not in e["message"] and "status of 403" not in e["message"]
    ]


def use_credential(driver: webdriver.Chrome, value: str) -> None:
    driver.find_element(By.ID, "token").send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()


def test_a_guarded_replica_asks_for_a_credential_and_keeps_it_for_the_tab(
    browser: webdriver.Chrome,
    guarded_read_api: str,
    settings: ConsumerSettings,
    start_worker: Callable[..., WorkerThread],
) -> None:
    start_worker(settings)
    browser.get(f"{guarded_read_api}/dashboard")
    login = browser.find_element(By.ID, "login")
    wait_for(browser, login.is_displayed, 20, "the credential form")
    assert polls(browser) == 0
    assert browser.find_element(By.ID, "login-reason").text == ""

    use_credential(browser, "eraser")
    wait_for(
        browser,
        lambda: "events:read" in browser.find_element(By.ID, "login-reason").text,
        20,
        "why a key without events:read is refused",
    )
    assert polls(browser) == 0

    use_credential(browser, "reader")
    wait_for(browser, lambda: polls(browser) >= 2, 20, "two updates")
    assert not login.is_displayed()
    wait_for(
        browser,
        lambda: len(rows(browser, "members", "client-id")) == 1,
        60,
        "the worker as the group's member",
    )
    host = browser.find_element(By.CSS_SELECTOR, "#members tbody tr td:nth-child(2)").text
    assert host not in ("", "\u2013"), "an authenticated reader sees the member's host"

    # A reload in the same tab keeps the credential (sessionStorage).
    before = polls(browser)
    browser.refresh()
    wait_for(browser, lambda: polls(browser) >= 1, 20, "an update after the reload")
    assert not browser.find_element(By.ID, "login").is_displayed()
    assert before >= 2
    assert refusals(browser) == []

"""The read API over a real Redis: paging, filters, 404, 400s and the operational routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.pipeline.status import StatusFile, WorkerStatus
from consumer_service.storage import RedisEventStore

from .conftest import Raw, WorkerThread, make_record, produce, wait_until, with_

USERS = ("ann", "bob", "cat")
TYPES = ("LOGIN", "LOGOUT", "PRODUCT_VIEW")


def ts(n: int) -> str:
    return f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}.000Z"


@pytest.fixture
def stored(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]
) -> list[dict[str, Any]]:
    """250 events stored through the real store: n-th event has timestamp ts(n)."""
    store = make_store(settings)
    records = [
        make_record(USERS[n % 3], TYPES[n % 3 if n % 2 else 0], timestamp=ts(n), payload={"n": n})
        for n in range(250)
    ]
    batch = [Accepted(r, partition=n % 6, offset=n) for n, r in enumerate(records)]
    store.store_batch(batch[:120], "2026-01-02T00:00:00.000Z")
    store.store_batch(batch[120:], "2026-01-02T00:00:01.000Z", {"not_json": 2})
    return records


@pytest.fixture
def client(settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]) -> FlaskClient:
    return create_app(settings, make_store(settings)).test_client()


def all_pages(client: FlaskClient, query: str, limit: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    url = f"/events/processed?limit={limit}{query}"
    for _ in range(100):
        body = client.get(url).get_json()
        assert body["count"] == len(body["events"]) <= limit
        events += body["events"]
        if body["next"] is None:
            return events
        url = f"/events/processed?limit={limit}{query}&cursor={body['next']}"
    raise AssertionError("paging did not end")


def test_pages_come_in_processing_order_and_end_with_next_null(
    client: FlaskClient, stored: list[dict[str, Any]]
) -> None:
    first = client.get("/events/processed").get_json()
    assert first["count"] == 100  # default limit
    assert first["total"] == 250
    assert first["next"] is not None
    assert [e["eventId"] for e in first["events"]] == [r["eventId"] for r in stored[:100]]
    stored_form = first["events"][0]
    assert {"processedAt", "partition", "offset"} <= stored_form.keys()

    pages = all_pages(client, "", 70)
    assert [e["eventId"] for e in pages] == [r["eventId"] for r in stored]
    assert len(client.get("/events/processed?limit=1000").get_json()["events"]) == 250


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("&userId=bob", lambda n, r: r["userId"] == "bob"),
        ("&eventType=LOGOUT", lambda n, r: r["eventType"] == "LOGOUT"),
        (
            "&userId=bob&eventType=LOGIN",
            lambda n, r: r["userId"] == "bob" and r["eventType"] == "LOGIN",
        ),
        (f"&since={ts(30)}&until={ts(90)}", lambda n, r: 30 <= n < 90),
        ("&since=2026-01-01T01:00:10%2B01:00", lambda n, r: n >= 10),  # offsets normalised
        (f"&userId=cat&since={ts(200)}", lambda n, r: r["userId"] == "cat" and n >= 200),
        ("&userId=nobody", lambda n, r: False),
        # Digits below the millisecond count (they were cut off: n=10 matched, n=20 not).
        ("&since=2026-01-01T00:00:10.0001Z", lambda n, r: n >= 11),
        ("&until=2026-01-01T00:00:20.0001Z", lambda n, r: n <= 20),
        (
            "&since=2026-01-01T00:00:09.999000001Z&until=2026-01-01T00:00:12Z",
            lambda n, r: n in (10, 11),
        ),
        # A window that cannot hold an event is an empty page, not a 400.
        (f"&since={ts(9)}&until={ts(9)}", lambda n, r: False),
        (f"&since={ts(20)}&until={ts(10)}", lambda n, r: False),
        # Bounds an offset moves outside years 0000-9999 are valid and exact.
        ("&since=0001-01-01T00:00:00%2B01:00", lambda n, r: True),
        ("&until=9999-12-31T23:59:59-01:00", lambda n, r: True),
        ("&until=0001-01-01T00:00:00%2B01:00", lambda n, r: False),
        ("&since=9999-12-31T23:59:59-01:00", lambda n, r: False),
        # Windows after and before every event: listed from the time index, empty.
        ("&since=9999-01-01T00:00:00Z", lambda n, r: False),
        ("&until=1970-01-01T00:00:00Z", lambda n, r: False),
        ("&userId=ann&eventType=LOGIN&since=9999-01-01T00:00:00Z", lambda n, r: False),
    ],
)
def test_filters(client: FlaskClient, stored: list[dict[str, Any]], query: str, keep: Any) -> None:
    want = [r["eventId"] for n, r in enumerate(stored) if keep(n, r)]
    assert [e["eventId"] for e in all_pages(client, query, 17)] == want


@pytest.mark.parametrize("limit", [1, 1000])
def test_a_cursor_past_the_last_event_is_an_empty_last_page(
    client: FlaskClient, stored: list[dict[str, Any]], limit: int
) -> None:
    body = client.get(f"/events/processed?limit={limit}&cursor=999999999999999999").get_json()
    assert (body["events"], body["next"], body["total"]) == ([], None, 250)


def test_a_page_ends_at_the_byte_budget_and_goes_on_from_its_cursor(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]
) -> None:
    store = make_store(settings)
    big = [Accepted(make_record(payload={"blob": "x" * 5000}), 0, n) for n in range(20)]
    store.store_batch(big, "2026-01-02T00:00:00.000Z")
    client = create_app(
        with_(settings, api=replace(settings.api, max_page_bytes=16_384)), store
    ).test_client()
    first = client.get("/events/processed?limit=1000").get_json()
    # Three bodies of about 5.2 kB come to less than 16 kB; the fourth reaches it.
    assert first["count"] == 4 and first["next"] is not None
    assert [e["eventId"] for e in all_pages(client, "", 1000)] == [a.event_id for a in big]


def test_one_event_and_404(client: FlaskClient, stored: list[dict[str, Any]]) -> None:
    record = stored[5]
    got = client.get(f"/events/processed/{record['eventId']}")
    assert got.status_code == 200
    assert {k: got.get_json()[k] for k in record} == record

    missing = client.get("/events/processed/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=-1",
        "cursor=abc",
        "since=yesterday",
        "since=2026-01-01T00:00:00",
        "since=2026-01-01T00:00:60Z",  # no stored timestamp names a leap second
        "userId=",
        # Empty is invalid for every parameter, as the OpenAPI document says.
        "until=",
        "since=",
        "limit=",
        "cursor=",
        "eventType=",
        "colour=red",
    ],
)
def test_invalid_queries_are_400_with_a_json_error(client: FlaskClient, query: str) -> None:
    resp = client.get(f"/events/processed?{query}")
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["type"] == "invalid_query"
    assert error["message"]


def test_every_error_is_json(client: FlaskClient) -> None:
    nowhere = client.get("/nowhere")
    assert nowhere.status_code == 404
    assert nowhere.get_json()["error"]["type"] == "not_found"
    wrong_method = client.post("/events/processed", json={})
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"]["type"] == "method_not_allowed"
    assert set(wrong_method.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert wrong_method.content_type == "application/json"


def test_stats(client: FlaskClient, stored: list[dict[str, Any]]) -> None:
    stats = client.get("/stats").get_json()
    assert stats["processed"] == 250
    assert stats["stored"] == 250
    assert stats["duplicatesSkipped"] == 0
    assert stats["deadLettered"] == 2
    assert stats["deadLetteredByReason"] == {"not_json": 2}
    assert sum(stats["byEventType"].values()) == 250
    assert stats["byEventType"]["LOGOUT"] == sum(r["eventType"] == "LOGOUT" for r in stored)


def test_health_ready_metrics_openapi(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore], tmp_path: Path
) -> None:
    status = StatusFile(tmp_path / "status.json")
    settings = with_(
        settings, api=replace(settings.api, ready_cache_seconds=0.0)
    )  # each request checks anew
    client = create_app(settings, make_store(settings), status).test_client()
    assert client.get("/health").get_json() == {"status": "ok"}

    # No heartbeat yet, then a fresh one, then a stale one.
    assert client.get("/ready").status_code == 503
    status.write(WorkerStatus("running", time.time(), 3), force=True)
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {"redis": "ok", "kafka": "ok", "worker": "ok"}
    status.write(WorkerStatus("running", time.time() - 3600, 3), force=True)
    stale = client.get("/ready")
    assert stale.status_code == 503
    assert stale.get_json()["checks"]["worker"] == "stalled"
    assert stale.get_json()["error"]["message"] == "Not ready: worker stalled."

    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "StoredEvent" in spec["components"]["schemas"]
    # An event of either schema version.
    schemas = spec["components"]["schemas"]
    versions = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["StoredEvent"]["anyOf"]]
    assert versions == ["StoredEventV1", "StoredEventV2"]
    assert all("eventId" in schemas[v]["properties"] for v in versions)
    params = {p["name"] for p in spec["paths"]["/events/processed"]["get"]["parameters"]}
    assert {"limit", "cursor", "userId", "eventType", "schemaVersion", "since", "until"} <= params


def test_unavailable_redis_is_503(settings: ConsumerSettings) -> None:
    store = RedisEventStore.from_url("redis://127.0.0.1:1/0", "x", 60, timeout_seconds=0.2)
    client = create_app(settings, store).test_client()
    resp = client.get("/events/processed")
    assert resp.status_code == 503
    assert resp.get_json()["error"]["type"] == "unavailable"
    assert client.get("/ready").status_code == 503


def samples(client: FlaskClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on /metrics, by name and labels."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_what_the_worker_did(
    settings: ConsumerSettings,
    make_store: Callable[..., RedisEventStore],
    start_worker: Callable[..., WorkerThread],
) -> None:
    # The worker runs in this process, so its metrics are on this app's /metrics; the
    # counters are process-wide, so the test looks at how much they moved.
    client = create_app(settings, make_store(settings)).test_client()
    store = make_store(settings)
    processed = ("consumer_events_processed_total", frozenset())
    duplicates = ("consumer_duplicates_skipped_total", frozenset())
    not_json = ("consumer_dead_lettered_total", frozenset({("reason", "not_json")}))
    schema = ("consumer_dead_lettered_total", frozenset({("reason", "invalid_schema")}))
    batches = ("consumer_batch_seconds_count", frozenset())
    before = samples(client)

    twice = make_record("m")
    records = [twice, make_record("m"), make_record("n"), twice]
    poison = [Raw(b"m", b"{nope"), Raw(b"n", b"[]"), Raw(b"n", b"\xff")]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, records)
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, poison)
    start_worker(settings)
    wait_until(
        lambda: (
            (s := store.stats())["processed"] + s["duplicatesSkipped"] == 4
            and s["deadLettered"] == 3
        ),
        20,
        "the worker handled every record",
    )

    # The worker counts a batch in Prometheus after Redis answered and observes its
    # duration after the commit, so the metrics may trail Redis's stats by a moment.
    after: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def moved(key: tuple[str, frozenset[tuple[str, str]]]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    def settled() -> bool:
        after.clear()
        after.update(samples(client))
        return moved(processed) >= 3 and moved(batches) >= 1

    wait_until(settled, 10, "the worker's metrics caught up with Redis")
    assert moved(processed) == 3
    assert moved(duplicates) == 1
    assert moved(not_json) == 2
    assert moved(schema) == 1
    assert moved(batches) >= 1  # one or more batches, each observed once
    assert moved(("consumer_batch_seconds_sum", frozenset())) > 0

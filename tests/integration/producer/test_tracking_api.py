"""The tracking API (/v1/*) against a real broker, and through a real consumer into Redis:
messages become version 2 events, invalid ones never cost the valid ones, and a batch
sent again is stored once."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.worker import Worker
from consumer_service.storage import PageQuery, RedisEventStore
from producer_service import create_app
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from tests.integration.consumer.conftest import WorkerThread, kafka_dlq, wait_until
from tests.integration.producer.conftest import read_topic

EVENT_TYPES = ("LOGIN", "PAGE_VIEW", "*")
WRITE_KEY = "tracking-write-key-1"


def _basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:".encode()).decode()}


@pytest.fixture
def tracking_app(kafka_bootstrap: str, topic: str) -> Iterator[Flask]:
    settings = ProducerSettings(
        common=CommonSettings(
            kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic, event_types=EVENT_TYPES
        ),
        ack_timeout_ms=10_000,
        api_keys=(WRITE_KEY,),
        # With `*` every mapped type is admitted: an empty one ignores its kind.
        tracking_identify_event_type="",
    )
    app = create_app(settings)
    yield app
    publisher_of(app).close(5)


@pytest.fixture
def client(tracking_app: Flask) -> FlaskClient:
    return tracking_app.test_client()


def track(message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": "user-1",
        "event": "Order Completed",
        "properties": {"total": 12.5, "sku": message_id},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        "timestamp": "2026-12-04T10:00:00.123456+00:00",
        "integrations": {},
        **fields,
    }


BATCH = {
    "batch": [
        track("m-0"),
        track("m-1", userId=None, anonymousId="anon-1"),
        {"type": "page", "messageId": "m-2", "userId": "user-1", "name": "Home"},
        {"type": "identify", "messageId": "m-3", "userId": "user-1", "traits": {"a": 1}},
        track("m-4", userId=None),  # neither userId nor anonymousId
        track("m-5", event="bad\nname"),
        "not a message",
    ],
    "sentAt": "2026-12-04T10:00:01.000000+00:00",
    "writeKey": WRITE_KEY,
}
STORED = 3  # m-0, m-1, m-2; m-3 ignored (IDENTIFY not admitted), three invalid


def post_batch(client: FlaskClient, body: Any, *, gzipped: bool = False) -> Any:
    data = json.dumps(body).encode()
    headers = {**_basic(WRITE_KEY), "Content-Type": "application/json"}
    if gzipped:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return client.post("/v1/batch", data=data, headers=headers)


def test_a_batch_publishes_its_valid_messages_as_version_2_events(
    client: FlaskClient, kafka_bootstrap: str, topic: str
) -> None:
    answer = post_batch(client, BATCH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["success"] is True
    assert (body["accepted"], body["ignored"], body["invalidCount"]) == (STORED, 1, 3)
    assert [(i["index"], sorted(i["fields"])) for i in body["invalid"]] == [
        (4, ["userId"]),
        (5, ["event"]),
        (6, ["_schema"]),
    ]
    messages = read_topic(kafka_bootstrap, topic)
    records = {json.loads(m.value())["payload"].get("sku", "page"): m for m in messages}
    assert sorted(records) == ["m-0", "m-1", "page"]
    first = json.loads(records["m-0"].value())
    assert records["m-0"].key() == b"user-1"
    assert first["schemaVersion"] == 2
    assert first["eventType"] == "Order Completed"
    assert first["payload"] == {"total": 12.5, "sku": "m-0"}
    assert first["source"] == "segment-api"
    assert first["originalTimestamp"] == "2026-12-04T10:00:00.123456+00:00"
    assert first["context"]["library"]["name"] == "analytics-python"
    anonymous = json.loads(records["m-1"].value())
    assert records["m-1"].key() == b"anon-1"
    assert "userId" not in anonymous
    page = json.loads(records["page"].value())
    assert (page["eventType"], page["payload"]) == ("PAGE_VIEW", {"name": "Home"})


def test_gzip_bodies_are_inflated_and_bounded(client: FlaskClient) -> None:
    answer = post_batch(client, {"batch": [track("g-0")]}, gzipped=True)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    # A few KB of gzip that inflate past the batch limit: refused without inflating it all.
    bomb = gzip.compress(b'{"batch": [' + b" " * (8 << 20) + b"]}")
    assert len(bomb) < 16 << 10
    answer = client.post(
        "/v1/batch",
        data=bomb,
        headers={**_basic(WRITE_KEY), "Content-Encoding": "gzip"},
        content_type="application/json",
    )
    assert answer.status_code == 413
    assert answer.get_json()["code"] == "request_entity_too_large"
    broken = client.post(
        "/v1/batch",
        data=b"not gzip",
        headers={**_basic(WRITE_KEY), "Content-Encoding": "gzip"},
        content_type="application/json",
    )
    assert broken.status_code == 400


@pytest.mark.parametrize(
    "body", [{"events": []}, {"batch": "x"}, [1], {"batch": {"type": "track"}}]
)
def test_a_body_that_is_not_a_batch_is_a_400_the_sdks_can_read(
    client: FlaskClient, body: Any
) -> None:
    answer = post_batch(client, body)
    assert answer.status_code == 400
    error = answer.get_json()
    assert error["code"] == "bad_request" and error["message"]


def test_limits_and_credentials(client: FlaskClient) -> None:
    big = {"batch": [track(f"b-{i}", properties={"x": "y" * 1000}) for i in range(600)]}
    assert post_batch(client, big).status_code == 413
    # A message over 32 KB as an event: reported, its neighbours published.
    huge = track("h-0", context={"blob": "z" * 40_000})
    answer = post_batch(client, {"batch": [huge, track("h-1")]})
    assert answer.status_code == 200
    assert (answer.get_json()["accepted"], answer.get_json()["invalidCount"]) == (1, 1)
    single = client.post("/v1/track", json=huge, headers=_basic(WRITE_KEY))
    assert single.status_code == 413
    refused = client.post("/v1/batch", json={"batch": []}, headers=_basic("wrong-key"))
    assert refused.status_code == 401
    assert refused.get_json()["code"] == "unauthorized"
    assert client.post("/v1/batch", json={"batch": []}).status_code == 401


def test_single_calls(client: FlaskClient) -> None:
    one = client.post("/v1/track", json=track("s-0"), headers=_basic(WRITE_KEY))
    assert one.status_code == 200 and one.get_json()["accepted"] == 1
    ignored = client.post(
        "/v1/identify", json={"userId": "u", "traits": {}}, headers=_basic(WRITE_KEY)
    )
    assert ignored.status_code == 200 and ignored.get_json()["ignored"] == 1
    invalid = client.post("/v1/page", json={"name": "Home"}, headers=_basic(WRITE_KEY))
    assert invalid.status_code == 400
    assert invalid.get_json()["code"] == "validation_error"
    mismatch = client.post("/v1/screen", json=track("s-1"), headers=_basic(WRITE_KEY))
    assert mismatch.status_code == 400


@pytest.fixture
def consumer_settings(
    kafka_bootstrap: str, redis_url: str, topic: str, consumer_group: str, redis_prefix: str
) -> ConsumerSettings:
    return ConsumerSettings(
        common=CommonSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_topic=topic,
            redis_url=redis_url,
            event_types=EVENT_TYPES,
        ),
        consumer_group=consumer_group,
        redis_prefix=redis_prefix,
        poll_timeout_seconds=0.1,
        session_timeout_ms=6000,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.5,
        redis_timeout_seconds=1.0,
    )


@pytest.fixture
def store(consumer_settings: ConsumerSettings, redis_url: str) -> Iterator[RedisEventStore]:
    store = RedisEventStore.from_url(
        redis_url, consumer_settings.redis_prefix, consumer_settings.dedup_ttl_seconds
    )
    yield store
    store.close()


def test_a_batch_sent_again_is_stored_once_and_read_back_in_its_version(
    client: FlaskClient, consumer_settings: ConsumerSettings, store: RedisEventStore
) -> None:
    assert post_batch(client, BATCH).status_code == 200
    # The SDK's retry, gzipped this time, and one message again inside another batch.
    assert post_batch(client, BATCH, gzipped=True).status_code == 200
    assert post_batch(client, {"batch": [track("m-0"), track("m-9")]}).status_code == 200
    # A version 1 event beside them.
    v1 = client.post(
        "/events/generate",
        json={"userId": "user-1", "eventType": "LOGIN"},
        headers={"X-API-Key": WRITE_KEY},
    )
    assert v1.status_code == 201
    sent = 2 * STORED + 2 + 1
    worker = WorkerThread(Worker(consumer_settings, store, kafka_dlq(consumer_settings))).start()
    try:
        stats = wait_until(
            lambda: (s := store.stats())["processed"] + s["duplicatesSkipped"] == sent and s,
            30,
            "every record consumed",
        )
    finally:
        assert worker.stop() == 0
    assert stats["stored"] == STORED + 2
    v2_events = store.page(PageQuery(limit=100, schema_version=2)).events
    assert sorted(e["payload"].get("sku", "page") for e in v2_events) == [
        "m-0",
        "m-1",
        "m-9",
        "page",
    ]
    assert [e["eventType"] for e in store.page(PageQuery(limit=100, schema_version=1)).events] == [
        "LOGIN"
    ]
    (anonymous,) = store.page(PageQuery(limit=100, user_id="anon-1")).events
    assert anonymous["anonymousId"] == "anon-1" and "userId" not in anonymous
    assert len(store.page(PageQuery(limit=100, user_id="user-1")).events) == 4


def test_the_quota_answers_429_with_retry_after(kafka_bootstrap: str, topic: str) -> None:
    settings = ProducerSettings(
        common=CommonSettings(
            kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic, event_types=EVENT_TYPES
        ),
        api_keys=(WRITE_KEY,),
        rate_limit="4/minute",
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        batch = {"batch": [track(f"q-{i}") for i in range(3)]}
        assert post_batch(client, batch).status_code == 200
        refused = post_batch(client, batch)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.get_json()["code"] == "rate_limited"
    finally:
        publisher_of(app).close(5)

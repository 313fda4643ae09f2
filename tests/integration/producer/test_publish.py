"""The API against a real broker: what a 201 promises is in the topic, as documented."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from typing import Any

from flask.testing import FlaskClient

from producer_service import create_app
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings
from tests.integration.producer.conftest import read_topic
from tests.unit.producer.scrape import sample


def post(client: FlaskClient, path: str, body: Any, **headers: str) -> Any:
    return client.post(path, json=body, headers=headers)


def test_record_key_value_and_headers(
    kafka_client: FlaskClient, kafka_bootstrap: str, topic: str
) -> None:
    body = {"userId": "user-42", "eventType": "PRODUCT_VIEW", "payload": {"sku": "X-1", "n": 2}}
    response = post(kafka_client, "/events/generate", body)
    assert response.status_code == 201, response.get_data(as_text=True)
    event = response.get_json()

    (msg,) = read_topic(kafka_bootstrap, topic)
    assert msg.key() == b"user-42"
    assert json.loads(msg.value()) == event
    assert b" " not in msg.value()  # compact JSON
    assert dict(msg.headers()) == {
        "eventType": b"PRODUCT_VIEW",
        "timestamp": event["timestamp"].encode(),
        "eventId": event["eventId"].encode(),
        "schemaVersion": b"1",
    }


def test_same_user_same_partition_in_order(
    kafka_client: FlaskClient, kafka_bootstrap: str, topic: str
) -> None:
    sent: dict[str, list[str]] = defaultdict(list)
    for i in range(30):
        user = f"user-{i % 5}"
        response = post(kafka_client, "/events/generate", {"userId": user, "eventType": "LOGIN"})
        assert response.status_code == 201
        sent[user].append(response.get_json()["eventId"])

    partitions: dict[str, set[int]] = defaultdict(set)
    received: dict[str, list[str]] = defaultdict(list)
    messages = read_topic(kafka_bootstrap, topic)
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        user = msg.key().decode()
        partitions[user].add(msg.partition())
        received[user].append(json.loads(msg.value())["eventId"])
    assert all(len(p) == 1 for p in partitions.values())
    assert len(set().union(*partitions.values())) > 1  # the users really were spread
    assert received == sent


def test_idempotency_key_gives_the_same_event_id(
    kafka_client: FlaskClient, kafka_bootstrap: str, topic: str
) -> None:
    body = {"userId": "user-1", "eventType": "LOGIN"}
    first = post(kafka_client, "/events/generate", body, **{"Idempotency-Key": "order-77"})
    retry = post(kafka_client, "/events/generate", body, **{"Idempotency-Key": "order-77"})
    other = post(kafka_client, "/events/generate", body, **{"Idempotency-Key": "order-78"})
    assert first.status_code == retry.status_code == other.status_code == 201
    assert first.get_json()["eventId"] == retry.get_json()["eventId"]
    assert other.get_json()["eventId"] != first.get_json()["eventId"]
    # Both copies reach Kafka with one eventId: the consumer stores it once.
    ids = [json.loads(m.value())["eventId"] for m in read_topic(kafka_bootstrap, topic)]
    assert sorted(ids) == sorted(r.get_json()["eventId"] for r in (first, retry, other))


def test_batch_event_ids_in_input_order(
    kafka_client: FlaskClient, kafka_bootstrap: str, topic: str
) -> None:
    events = [
        {"userId": f"user-{i % 7}", "eventType": "PRODUCT_VIEW", "payload": {"i": i}}
        for i in range(200)
    ]
    response = post(kafka_client, "/events/batch", {"events": events})
    assert response.status_code == 201, response.get_data(as_text=True)
    ids = response.get_json()["eventIds"]
    assert len(ids) == len(set(ids)) == 200

    by_id = {}
    for msg in read_topic(kafka_bootstrap, topic):
        value = json.loads(msg.value())
        by_id[value["eventId"]] = (value, msg)
    assert [by_id[event_id][0]["payload"]["i"] for event_id in ids] == list(range(200))
    # One user's events keep their input order in their partition.
    for user in {e["userId"] for e in events}:
        mine = [by_id[i][1] for i in ids if by_id[i][0]["userId"] == user]
        assert len({m.partition() for m in mine}) == 1
        offsets = [m.offset() for m in mine]
        assert offsets == sorted(offsets)


def test_batch_idempotency_key(kafka_client: FlaskClient) -> None:
    body = {
        "events": [{"userId": "u", "eventType": "LOGIN", "payload": {"n": n}} for n in range(3)]
    }
    first = post(kafka_client, "/events/batch", body, **{"Idempotency-Key": "import-1"})
    retry = post(kafka_client, "/events/batch", body, **{"Idempotency-Key": "import-1"})
    assert first.status_code == retry.status_code == 201
    assert first.get_json()["eventIds"] == retry.get_json()["eventIds"]
    assert len(set(first.get_json()["eventIds"])) == 3


def test_ready_with_a_broker(kafka_client: FlaskClient) -> None:
    assert kafka_client.get("/ready").get_json() == {"status": "ready"}


def test_not_ready_when_the_topic_is_missing(kafka_settings: ProducerSettings) -> None:
    common = replace(kafka_settings.common, kafka_topic="no-such-topic-for-producer-tests")
    app = create_app(replace(kafka_settings, common=common))
    try:
        assert app.test_client().get("/ready").status_code == 503
    finally:
        publisher_of(app).close(1)


def test_metrics_count_real_deliveries(kafka_client: FlaskClient) -> None:
    def published() -> float:
        return sample(kafka_client, "producer_events_published_total", event_type="LOGOUT")

    def latency() -> tuple[float, float]:
        count = sample(kafka_client, "producer_delivery_latency_seconds_count")
        return count, sample(kafka_client, "producer_delivery_latency_seconds_sum")

    published_before, (count_before, sum_before) = published(), latency()
    for user in ("m1", "m2"):
        response = post(kafka_client, "/events/generate", {"userId": user, "eventType": "LOGOUT"})
        assert response.status_code == 201
    count_after, sum_after = latency()
    assert published() - published_before == 2
    assert count_after - count_before == 2
    # A real round trip to the broker: more than nothing, less than the ack timeout.
    assert 0 < sum_after - sum_before < 2 * 10


def test_unwritable_json_reaches_no_topic(
    kafka_client: FlaskClient, kafka_bootstrap: str, topic: str
) -> None:
    bodies = [
        b'{"userId":"u","eventType":"LOGIN","payload":{"a":1e400}}',
        b'{"userId":"u\\ud800","eventType":"LOGIN"}',
        b'{"userId":"u","eventType":"LOGIN","\\ud800":1}',
    ]
    for body in bodies:
        for path, data in (
            ("/events/generate", body),
            ("/events/batch", b'{"events":[{"userId":"ok","eventType":"LOGIN"},' + body + b"]}"),
        ):
            response = kafka_client.post(path, data=data, content_type="application/json")
            assert response.status_code == 400, (path, body, response.get_data())
            assert response.get_json()["error"]["type"] == "bad_request"
    assert read_topic(kafka_bootstrap, topic) == []

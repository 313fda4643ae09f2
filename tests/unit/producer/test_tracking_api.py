"""/v1/batch through the Flask app with an in-memory publisher: a batch's context is merged
into each message within the same bounds, and the fast path publishes exactly what the
schema path publishes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from producer_service import tracking
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from shared.json_codec import MAX_JSON_NESTING, nesting_exceeds
from tests.unit.producer.fakes import InMemoryEventPublisher

# Room for a context nested MAX_JSON_NESTING deep as lists (2 bytes a level).
MAX_PAYLOAD_BYTES = 1024


@pytest.fixture
def settings() -> ProducerSettings:
    return ProducerSettings(
        common=CommonSettings(kafka_topic="unit-events", event_types=("LOGIN", "PAGE_VIEW")),
        max_payload_bytes=MAX_PAYLOAD_BYTES,
    )


def track(message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": "user-1",
        "anonymousId": None,
        "event": "LOGIN",
        "properties": {"n": message_id},
        "timestamp": "2026-12-04T10:00:00.123456+00:00",
        "integrations": {},
        **fields,
    }


def post(client: FlaskClient, body: Any) -> Any:
    return client.post("/v1/batch", data=json.dumps(body), content_type="application/json")


def test_the_batch_context_is_in_every_record_under_each_message_own_keys(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    body = {
        "batch": [
            track("m-0"),
            track("m-1", context={"locale": "de-DE", "page": {"path": "/"}}),
            {"type": "page", "messageId": "m-2", "anonymousId": "a", "name": "Home"},
        ],
        "context": {"locale": "fr-FR", "library": {"name": "http"}},
        "integrations": {"All": False},
    }
    answer = post(client, body)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["accepted"] == 3
    contexts = {r["payload"].get("n", "page"): r["context"] for r in fake.records}
    assert contexts == {
        "m-0": {"locale": "fr-FR", "library": {"name": "http"}},
        "m-1": {"locale": "de-DE", "library": {"name": "http"}, "page": {"path": "/"}},
        "page": {"locale": "fr-FR", "library": {"name": "http"}},
    }
    # `integrations` routes Segment's destinations; no record carries it.
    assert all("integrations" not in r for r in fake.records)


def test_a_message_whose_merged_context_is_over_the_bound_is_reported_alone(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    # Each context alone is within MAX_PAYLOAD_BYTES, merged they are not.
    body = {
        "batch": [track("m-0"), track("m-1", context={"b": "y" * 600})],
        "context": {"a": "x" * 600},
    }
    answer = post(client, body)
    assert answer.status_code == 200
    report = answer.get_json()
    assert (report["accepted"], report["invalidCount"]) == (1, 1)
    (item,) = report["invalid"]
    assert (item["index"], item["messageId"], list(item["fields"])) == (1, "m-1", ["context"])
    assert [r["payload"]["n"] for r in fake.records] == ["m-0"]


@pytest.mark.parametrize("context", ["x", [1], 3, True])
def test_a_batch_context_that_is_not_an_object_is_a_400(
    client: FlaskClient, fake: InMemoryEventPublisher, context: Any
) -> None:
    answer = post(client, {"batch": [track("m-0")], "context": context})
    assert answer.status_code == 400
    error = answer.get_json()
    assert error["code"] == "validation_error" and "context" in error["message"]
    assert fake.records == []


def test_a_null_batch_context_is_none(client: FlaskClient, fake: InMemoryEventPublisher) -> None:
    assert post(client, {"batch": [track("m-0")], "context": None}).status_code == 200
    assert "context" not in fake.records[0]


def test_a_batch_context_multiplied_past_the_batch_limit_is_a_413(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    # 2,000 messages of ~60 bytes and a context of 250 bytes: a 120 KB body that would
    # write 500 KB of context into Kafka.
    messages = [{"type": "track", "userId": "u", "event": "LOGIN"}] * 2000
    answer = post(client, {"batch": messages, "context": {"c": "z" * 250}})
    assert answer.status_code == 413
    assert answer.get_json()["code"] == "request_entity_too_large"
    assert fake.records == []
    # The same context over fewer messages is fine.
    assert post(client, {"batch": messages[:100], "context": {"c": "z" * 200}}).status_code == 200


def test_a_deep_batch_context_stays_within_the_record_nesting_bound(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    def nested(depth: int) -> Any:
        # An object `depth` levels deep: {"d": [[...]]}.
        value: Any = []
        for _ in range(depth - 2):
            value = [value]
        return {"d": value}

    # The body's own nesting bound: the body is level 1, its context level 2.
    deepest = nested(MAX_JSON_NESTING - 1)
    answer = post(client, {"batch": [track("m-0")], "context": deepest})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert not nesting_exceeds(fake.records[0])
    too_deep = post(client, {"batch": [track("m-1")], "context": nested(MAX_JSON_NESTING)})
    assert too_deep.status_code == 400
    assert len(fake.records) == 1


MIXED = {
    "batch": [
        track("m-0"),
        track("m-1", userId=None, anonymousId="anon-1", context={"ip": "10.0.0.1"}),
        track("m-2", event="NOT ADMITTED"),
        track("m-3", userId="bad\nid"),
        track("m-4", context={"big": "q" * 1100}),
        track("m-5", properties="not an object"),
        {"type": "page", "messageId": "m-6", "userId": "u", "name": "Home"},
        {"type": "identify", "messageId": "m-7", "userId": "u", "traits": {"a": 1}},
        track("m-8", timestamp=None, originalTimestamp="yesterday"),
        "not a message",
    ],
    "context": {"library": {"name": "http"}},
}


def test_the_fast_path_publishes_and_refuses_what_the_schema_path_does(
    client: FlaskClient, fake: InMemoryEventPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_answer = post(client, MIXED).get_json()
    fast_records = [dict(r) for r in fake.records]
    fake.records.clear()
    # Every message through marshmallow.
    monkeypatch.setattr(tracking, "fast_event", lambda *args: None)
    slow_answer = post(client, MIXED).get_json()
    slow_records = [dict(r) for r in fake.records]
    assert fast_answer == slow_answer
    assert fast_answer["accepted"] == 4 and fast_answer["invalidCount"] == 5

    def without_timestamp(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "timestamp"} for r in records]

    assert without_timestamp(fast_records) == without_timestamp(slow_records)
    assert len(fast_records) == 4


def test_a_batch_kafka_did_not_fully_acknowledge_is_a_503_and_its_retry_keeps_the_ids(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    body = {"batch": [track(f"m-{n}") for n in range(3)]}
    fake.fail = {1: "timed out"}
    refused = post(client, body)
    assert refused.status_code == 503
    error = refused.get_json()
    # What the SDKs read, and what makes them retry: code and message, a 5xx.
    assert error["code"] and "1 of 3" in error["message"]
    first_try = [r["eventId"] for r in fake.records]
    fake.fail = {}
    again = post(client, body)
    assert again.status_code == 200 and again.get_json()["accepted"] == 3
    # The retry publishes under the same eventIds: the consumer stores each message once.
    retried = [r["eventId"] for r in fake.records[len(first_try) :]]
    assert set(first_try) <= set(retried) and len(set(retried)) == 3

"""Property: whatever the producer accepts reaches storage unchanged.

For any input `{userId, eventType, payload}`: if `EventInputSchema` accepts it, then the
record the producer writes (`compact_json(enrich(...))`) is accepted by the consumer's
`decide`, and the stored form parses back to exactly the input's userId, eventType and
payload (same types, same key order, same float bits), plus the enriched fields.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from marshmallow import ValidationError

from consumer_service.pipeline.processing import Accepted, decide
from shared.event_rules import DEFAULT_MAX_PAYLOAD_BYTES
from shared.events import (
    SCHEMA_VERSION,
    EventInputSchema,
    StoredEventSchema,
    enrich,
    record_headers,
)
from shared.json_codec import compact_json
from tests.strategies import EVENT_TYPES, identical, inputs, payloads

INPUT_SCHEMA = EventInputSchema(EVENT_TYPES)
# The consumer's default record limit: the biggest accepted payload (16 KiB of JSON that
# may be mostly escapes) plus the envelope fits in it.
MAX_RECORD_BYTES = 64 * 1024
PROCESSED_AT = "2026-11-24T04:29:53.123Z"


def test_identical_tells_apart_what_equality_does_not() -> None:
    assert identical({"a": [1, 0.5, None, "x"]}, {"a": [1, 0.5, None, "x"]})
    assert not identical(1, 1.0)
    assert not identical(True, 1)
    assert not identical(-0.0, 0.0)
    assert not identical({"a": 1, "b": 2}, {"b": 2, "a": 1})


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sent=inputs)
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"n": 2**64 + 1, "f": -0.0}})
@example(sent={"userId": "\U0001f680 ü", "eventType": "LOGOUT", "payload": {"\u2028": "\x00"}})
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"x": 1e308, "y": 5e-324}})
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"x": "\ud800"}})
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"x": math.inf}})
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"x": "a" * 20_000}})
def test_what_the_producer_accepts_is_stored_unchanged(sent: dict[str, Any]) -> None:
    try:
        loaded = INPUT_SCHEMA.load(sent)
    except ValidationError:
        event("refused")
        return
    event("accepted")
    record = enrich(loaded)
    value = compact_json(record)

    decision = decide(value, 3, 42, MAX_RECORD_BYTES, frozenset(EVENT_TYPES))
    assert isinstance(decision, Accepted), decision
    assert decision.event_id == record["eventId"]
    stored = json.loads(decision.stored_form(PROCESSED_AT))

    assert identical(stored["userId"], sent["userId"])
    assert identical(stored["eventType"], sent["eventType"])
    assert identical(stored["payload"], sent.get("payload", {}))
    for name in ("eventId", "timestamp"):
        assert stored[name] == record[name]
    assert stored["schemaVersion"] == SCHEMA_VERSION
    assert (stored["processedAt"], stored["partition"], stored["offset"]) == (PROCESSED_AT, 3, 42)
    assert list(stored) == [*record, "processedAt", "partition", "offset"]
    # What the read API serves is what its document says it serves.
    assert identical(StoredEventSchema().load(stored), stored)
    # The headers carry the same routing facts as the value.
    headers = dict(record_headers(record))
    assert headers["eventId"].decode() == stored["eventId"]
    assert headers["eventType"].decode() == stored["eventType"]


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(payload=payloads)
def test_a_payload_is_refused_only_for_a_stated_reason(payload: dict[str, Any]) -> None:
    """The converse, so the property above cannot pass by refusing everything: a payload
    is refused only when it cannot be written as strict JSON or is over the size limit."""
    event = {"userId": "u", "eventType": "LOGIN", "payload": payload}
    try:
        compact_json(payload)
    except (ValueError, RecursionError):
        writable = False
    else:
        writable = len(compact_json(payload)) <= DEFAULT_MAX_PAYLOAD_BYTES
    try:
        INPUT_SCHEMA.load(event)
    except ValidationError as exc:
        assert not writable, exc.messages
    else:
        assert writable

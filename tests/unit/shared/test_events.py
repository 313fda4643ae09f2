import re
import uuid
from datetime import UTC, datetime

import pytest
from marshmallow import ValidationError

from shared.events import (
    MAX_JSON_NESTING,
    TIMESTAMP_PATTERN,
    EventInputSchema,
    EventRecordSchema,
    compact_json,
    enrich,
    enrich_batch,
    json_problem,
    nesting_exceeds,
    new_event_id,
    random_event_ids,
    utc_timestamp,
)

EVENTS = [
    {"userId": "u1", "eventType": "LOGIN", "payload": {"a": 1}},
    {"userId": "u2", "eventType": "LOGOUT"},
    {"userId": "u1", "eventType": "PRODUCT_VIEW", "payload": {}},
]


def test_random_event_ids_are_distinct_version_4_uuids() -> None:
    ids = random_event_ids(1000)
    assert len(set(ids)) == 1000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == value


def test_timestamp_is_utc_with_milliseconds_and_z() -> None:
    moment = datetime(2026, 11, 24, 4, 29, 53, 123999, tzinfo=UTC)
    assert utc_timestamp(moment) == "2026-11-24T04:29:53.123Z"
    assert re.match(TIMESTAMP_PATTERN, utc_timestamp())


def test_idempotency_key_gives_the_same_id_per_user_and_differs_across_users() -> None:
    assert new_event_id("u1", "k") == new_event_id("u1", "k")
    assert new_event_id("u1", "k") != new_event_id("u2", "k")
    assert new_event_id("u1", "k") != new_event_id("u1", "k2")
    assert uuid.UUID(new_event_id("u1", "k")).version == 5


def test_enrich_batch_keeps_order_and_shares_one_timestamp() -> None:
    moment = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
    records = enrich_batch(EVENTS, now=moment)
    assert [r["userId"] for r in records] == ["u1", "u2", "u1"]
    assert [r["eventType"] for r in records] == ["LOGIN", "LOGOUT", "PRODUCT_VIEW"]
    assert {r["timestamp"] for r in records} == {"2026-11-24T04:00:00.000Z"}
    assert records[1]["payload"] == {}
    assert len({r["eventId"] for r in records}) == 3
    for record in records:
        assert EventRecordSchema().load(record) == record


def test_enrich_batch_with_a_key_derives_each_id_from_key_and_index() -> None:
    first = enrich_batch(EVENTS, idempotency_key="import-7")
    again = enrich_batch(EVENTS, idempotency_key="import-7")
    assert [r["eventId"] for r in first] == [r["eventId"] for r in again]
    assert [r["eventId"] for r in first] == [
        new_event_id(e["userId"], f"import-7:{i}") for i, e in enumerate(EVENTS)
    ]


def test_enrich_single_event_uses_the_key_as_given() -> None:
    record = enrich(EVENTS[0], idempotency_key="k")
    assert record["eventId"] == new_event_id("u1", "k")
    assert EventRecordSchema().load(record) == record


def test_compact_json_refuses_what_the_other_side_could_not_parse() -> None:
    assert json_problem({"a": float("inf")}) is not None  # what a literal 1e400 parses to
    assert json_problem({"a": float("nan")}) is not None
    assert json_problem({"a": "\ud800"}) == "contains an unpaired UTF-16 surrogate"
    assert json_problem({"a": "ü€😀"}) is None
    assert compact_json({"a": "ü", "b": [1, 2.5]}) == '{"a":"ü","b":[1,2.5]}'.encode()


def test_payload_that_cannot_be_encoded_is_a_validation_error_not_a_crash() -> None:
    schema = EventInputSchema(("LOGIN",))
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    for payload in ({"x": float("inf")}, {"x": "\udc00"}, deep):
        with pytest.raises(ValidationError) as err:
            schema.load({"userId": "u", "eventType": "LOGIN", "payload": payload})
        assert "cannot be stored as JSON" in str(err.value.messages["payload"])


def test_nesting_is_capped_at_the_shared_limit() -> None:
    def nested(depth: int) -> dict[str, object]:
        value: dict[str, object] = {}
        for _ in range(depth - 1):
            value = {"n": value}
        return value

    assert not nesting_exceeds(nested(MAX_JSON_NESTING))
    assert nesting_exceeds(nested(MAX_JSON_NESTING + 1))
    assert json_problem(nested(MAX_JSON_NESTING)) is None
    assert json_problem(nested(MAX_JSON_NESTING + 1)) == (
        f"nested more than {MAX_JSON_NESTING} levels deep"
    )

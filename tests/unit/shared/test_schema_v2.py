"""Event schema version 2 beside version 1: what each accepts, and that version 1 records
load exactly as they always did."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from consumer_service.pipeline.processing import Accepted, decide
from shared.events import (
    EventRecordSchema,
    EventRecordV2Schema,
    StoredEventSchema,
    enrich,
    event_key,
)
from shared.json_codec import compact_json

EVENT_ID = "0b6c1d1e-8f3a-4c55-9d5e-0123456789ab"
TS = "2026-12-04T10:00:00.000Z"


def v2(**fields: Any) -> dict[str, Any]:
    """A version 2 record with `fields`, in the order records are written."""
    given: dict[str, Any] = {
        "eventId": EVENT_ID,
        "eventType": "Order Completed",
        "timestamp": TS,
        "payload": {"total": 12.5},
        **fields,
        "schemaVersion": 2,
    }
    order = list(EventRecordV2Schema().fields)
    return {name: given[name] for name in sorted(given, key=order.index)}


def test_v2_with_every_field_loads_unchanged_in_written_order() -> None:
    record = {
        "eventId": EVENT_ID,
        "userId": "u1",
        "anonymousId": "a-1",
        "eventType": "Order Completed",
        "timestamp": TS,
        "originalTimestamp": "2026-12-04T09:59:59.120+01:00",
        "source": "segment-api",
        "payload": {"total": 12.5},
        "context": {"library": {"name": "analytics-python"}, "ip": "10.0.0.1"},
        "schemaVersion": 2,
    }
    loaded = EventRecordSchema().load(dict(record))
    assert compact_json(loaded) == compact_json(record)


def test_v2_anonymous_only_is_keyed_by_its_anonymous_id() -> None:
    loaded = EventRecordSchema().load(v2(anonymousId="anon-7"))
    assert "userId" not in loaded
    assert event_key(loaded) == "anon-7"
    assert event_key(EventRecordSchema().load(v2(userId="u", anonymousId="a"))) == "u"


def test_v2_needs_user_id_or_anonymous_id() -> None:
    with pytest.raises(ValidationError, match="Either userId or anonymousId"):
        EventRecordSchema().load(v2())


@pytest.mark.parametrize("field", ["userId", "anonymousId", "source", "originalTimestamp"])
@pytest.mark.parametrize("bad", ["a\nb", "\u202eevil", "", "x" * 200])
def test_v2_identities_and_labels_follow_the_user_id_rule(field: str, bad: str) -> None:
    record = v2(userId="u")
    record[field] = bad
    with pytest.raises(ValidationError) as info:
        EventRecordSchema().load(record)
    assert field in info.value.messages_dict


def test_v2_refuses_unknown_fields_and_non_object_context() -> None:
    with pytest.raises(ValidationError):
        EventRecordSchema().load({**v2(userId="u"), "messageId": "m"})
    with pytest.raises(ValidationError):
        EventRecordSchema().load(v2(userId="u", context=[1]))


def test_v1_records_are_unchanged() -> None:
    record = enrich({"userId": "u", "eventType": "LOGIN", "payload": {"a": 1}})
    assert record["schemaVersion"] == 1
    assert EventRecordSchema().load(dict(record)) == record
    # A version 1 record may not carry version 2's fields.
    with pytest.raises(ValidationError):
        EventRecordSchema().load({**record, "anonymousId": "a"})


def test_stored_schema_loads_both_versions() -> None:
    stored = {**v2(anonymousId="a"), "processedAt": TS, "partition": 0, "offset": 3}
    assert StoredEventSchema().load(dict(stored)) == stored


@pytest.mark.parametrize(
    "record",
    [
        v2(anonymousId="anon"),
        v2(userId="u", context={"page": {"path": "/"}}, source="segment-api"),
        # Version 2 with only version 1's fields: the fast path decides it.
        v2(userId="u"),
    ],
)
def test_the_consumer_stores_v2_records_as_written(record: dict[str, Any]) -> None:
    value = compact_json(record)
    decision = decide(value, 0, 5, 1 << 20, {"Order Completed"})
    assert isinstance(decision, Accepted)
    stored = decision.stored_form(TS)
    assert stored == value[:-1] + f',"processedAt":"{TS}","partition":0,"offset":5}}'.encode()

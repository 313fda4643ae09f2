"""The pure decision rules: what is an event, what is poison, when to stop."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from consumer_service.pipeline import processing
from consumer_service.pipeline.dlq import DeadLetter, dlq_headers, normalise_headers
from consumer_service.pipeline.processing import (
    MAX_NESTING,
    Accepted,
    InvalidRecord,
    PoisonWindow,
    Rejected,
    backoff_delay,
    decide,
    decide_safely,
    decode_record,
)
from shared.config import DEFAULT_EVENT_TYPES
from shared.json_codec import compact_json

TYPES = frozenset(DEFAULT_EVENT_TYPES)


def record(**changes: Any) -> dict[str, Any]:
    base = {
        "eventId": str(uuid.uuid4()),
        "userId": "user-1",
        "eventType": "LOGIN",
        "timestamp": "2026-11-24T04:29:53.123Z",
        "payload": {"device": "mobile"},
        "schemaVersion": 1,
    }
    base.update(changes)
    return base


def test_a_valid_record_is_accepted_with_its_position() -> None:
    r = record()
    decision = decide(compact_json(r), 3, 42, 4096, TYPES)
    assert decision == Accepted(r, 3, 42)
    assert isinstance(decision, Accepted)
    stored = json.loads(decision.stored_form("2026-11-24T05:00:00.000Z"))
    assert stored == {**r, "processedAt": "2026-11-24T05:00:00.000Z", "partition": 3, "offset": 42}


def test_the_stored_form_is_byte_for_byte_the_compact_json_of_record_plus_position() -> None:
    # stored_form appends to the JSON decide() already produced instead of re-encoding;
    # it must equal the full encoding, non-ASCII and nested payloads included.
    r = record(userId="usér-ü", payload={"a": [1, {"b": None, "c": "€"}], "d": 2.5})
    decision = decide(compact_json(r), 5, 7, 4096, TYPES)
    assert isinstance(decision, Accepted)
    assert decision.encoded == compact_json(r)
    expected = compact_json(
        {**r, "processedAt": "2026-11-24T05:00:00.000Z", "partition": 5, "offset": 7}
    )
    assert decision.stored_form("2026-11-24T05:00:00.000Z") == expected
    # Built without the cached JSON (as the store tests do), the answer is the same.
    assert Accepted(r, 5, 7).stored_form("2026-11-24T05:00:00.000Z") == expected


def original(**changes: Any) -> bytes:
    """A record as the Node service we replace wrote it: JSON.stringify of the enriched
    event, in its key order, with no schemaVersion (../shared/seed-architecture.md)."""
    event = {
        "eventId": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",  # npm uuid v4: lowercase
        "userId": "user-7",
        "eventType": "PRODUCT_VIEW",
        "timestamp": "2025-03-01T09:15:27.041Z",  # Date.prototype.toISOString()
        "payload": {"sku": "X-1", "qty": 2},
    }
    event.update(changes)
    return json.dumps({k: v for k, v in event.items() if v is not DROP}).encode()


DROP = object()


def test_a_record_of_the_original_service_is_accepted_as_version_1() -> None:
    decision = decide(original(), 2, 11, 4096, TYPES)
    assert isinstance(decision, Accepted)
    expected = {**json.loads(original()), "schemaVersion": 1}
    assert decision.record == expected
    stored = decision.stored_form("2026-11-24T05:00:00.000Z")
    assert stored == compact_json(
        {**expected, "processedAt": "2026-11-24T05:00:00.000Z", "partition": 2, "offset": 11}
    )
    # The normalised record is what we store: the read API never sees the old shape.
    assert json.loads(stored)["schemaVersion"] == 1


@pytest.mark.parametrize("payload", [DROP, None])
def test_the_original_shape_without_a_payload_gets_an_empty_one(payload: object) -> None:
    decision = decide(original(payload=payload), 0, 0, 4096, TYPES)
    assert isinstance(decision, Accepted)
    assert decision.record["payload"] == {}
    assert decision.record["schemaVersion"] == 1


@pytest.mark.parametrize(
    "value",
    [
        # Only a missing schemaVersion means "the original shape"; every other rule holds.
        original(eventId="not-a-uuid"),
        original(eventId="1B9D6BCD-BBFD-4B2D-9B5D-AB8DFBBD4BED"),
        original(timestamp="2025-03-01T09:15:27Z"),
        original(userId=""),
        original(payload=[1, 2]),
        original(payload="text"),
        original(extra=1),
        original(userId=DROP),
        original(schemaVersion=None),
        original(schemaVersion="1"),
        # A record that names its version keeps today's rules: payload is required.
        compact_json(record(payload=None)),
        compact_json({k: v for k, v in record().items() if k != "payload"}),
    ],
)
def test_nothing_else_is_loosened_for_the_original_shape(value: bytes) -> None:
    decision = decide(value, 0, 0, 4096, TYPES)
    assert isinstance(decision, Rejected)
    assert decision.reason == "invalid_schema"


def test_an_event_type_outside_event_types_is_dead_lettered_under_its_own_reason() -> None:
    decision = decide(compact_json(record(eventType="CHECKOUT")), 0, 0, 4096, TYPES)
    assert isinstance(decision, Rejected)
    assert decision.reason == "unknown_event_type"
    assert decision.message == (
        'The eventType "CHECKOUT" is not one of this consumer\'s EVENT_TYPES.'
    )
    # Adding the type to the set is all it takes for the same record to be stored.
    value = compact_json(record(eventType="CHECKOUT"))
    assert isinstance(decide(value, 0, 0, 4096, TYPES | {"CHECKOUT"}), Accepted)


def test_a_malformed_record_is_invalid_schema_whatever_its_type() -> None:
    # The schema comes first: only a well-formed event is called unknown_event_type, so
    # what that reason holds is what a replay after adding the type would store.
    decision = decide(compact_json(record(eventType="CHECKOUT", eventId="x")), 0, 0, 4096, TYPES)
    assert isinstance(decision, Rejected) and decision.reason == "invalid_schema"


@pytest.mark.parametrize("event_type", ["\u202eNIGOL", "LOGIN\n", "x" * 64, "\ud800"])
def test_the_event_type_is_matched_exactly_and_quoted_as_ascii(event_type: str) -> None:
    value = json.dumps(record(eventType=event_type)).encode()
    decision = decide(value, 0, 0, 4096, TYPES)
    assert isinstance(decision, Rejected)
    assert decision.reason in {"unknown_event_type", "not_json"}
    assert decision.message.isascii()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "not_json"),
        (b"", "not_json"),
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b'{"a": NaN}', "not_json"),
        (b"[1, 2]", "invalid_schema"),
        (b'"text"', "invalid_schema"),
        (compact_json(record(eventId="nope")), "invalid_schema"),
        (compact_json(record(timestamp="yesterday")), "invalid_schema"),
        (compact_json(record(schemaVersion="1")), "invalid_schema"),
        (compact_json(record(extra=True)), "invalid_schema"),
        (compact_json({k: v for k, v in record().items() if k != "userId"}), "invalid_schema"),
        (compact_json(record(payload={"blob": "x" * 5000})), "too_large"),
    ],
)
def test_poison_is_rejected_with_its_reason(value: bytes | None, reason: str) -> None:
    decision = decide(value, 1, 7, 4096, TYPES)
    assert isinstance(decision, Rejected)
    assert (decision.reason, decision.partition, decision.offset) == (reason, 1, 7)
    assert decision.message


def with_payload(raw_payload: bytes) -> bytes:
    """A valid record with `raw_payload` spliced in as JSON text."""
    return compact_json(record(payload={})).replace(b'"payload":{}', b'"payload":' + raw_payload)


def nested(depth: int) -> bytes:
    """A payload object holding arrays, `depth` containers deep in all."""
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        # json.loads raises RecursionError (~10 KB, far under the size limit).
        (with_payload(nested(5000)), "nested"),
        # Parses, but deeper than MAX_NESTING: the read API might not be able to serve it.
        (with_payload(nested(MAX_NESTING)), "nested"),
        # Valid UTF-8 bytes and valid JSON syntax; the string cannot be written as UTF-8.
        (with_payload(b'{"s":"\\ud800"}'), "surrogate"),
        (with_payload(b'{"s":"\\udfff x \\ud800"}'), "surrogate"),
        # Parses to inf, which cannot be written back as JSON.
        (with_payload(b'{"n":1e400}'), "out of range"),
        (with_payload(b'{"n":-1E+999}'), "out of range"),
    ],
)
def test_content_that_cannot_be_read_or_written_back_is_not_json(value: bytes, words: str) -> None:
    decision = decide(value, 0, 5, 64 * 1024, TYPES)
    assert isinstance(decision, Rejected)
    assert decision.reason == "not_json"
    assert words in decision.message
    decision.message.encode("utf-8")  # fit for a header and a log line


def test_nesting_up_to_the_limit_is_accepted_and_stored() -> None:
    # The record object itself is one level, its payload the rest.
    decision = decide(with_payload(nested(MAX_NESTING - 1)), 0, 5, 64 * 1024, TYPES)
    assert isinstance(decision, Accepted)
    json.loads(decision.stored_form("2026-11-24T05:00:00.000Z"))
    # A big finite number and a surrogate PAIR (one emoji) are fine.
    paired = with_payload(b'{"n":1e300,"s":"\\ud83d\\ude00"}')
    assert isinstance(decide(paired, 0, 5, 4096, TYPES), Accepted)


def test_a_schema_error_quoting_a_surrogate_field_name_is_still_encodable() -> None:
    value = compact_json(record()).replace(b'"schemaVersion"', b'"x\\ud800":1,"schemaVersion"')
    decision = decide(value, 0, 1, 4096, TYPES)
    assert isinstance(decision, Rejected)
    assert decision.reason == "invalid_schema"
    assert "ud800" in decision.message
    decision.message.encode("utf-8")


def test_the_size_check_comes_before_parsing() -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_record(b"x" * 10_000, 100, TYPES)
    assert info.value.reason == "too_large"


def test_the_poison_window_trips_only_above_the_share_of_the_window() -> None:
    window = PoisonWindow(size=10, max_share=0.5)
    assert not any(window.record(True) for _ in range(5))  # 5 of 10: at the limit, not over
    assert window.record(True)  # 6 > 5


def test_the_poison_window_forgets_old_records() -> None:
    window = PoisonWindow(size=10, max_share=0.5)
    for _ in range(5):
        assert not window.record(True)
    for _ in range(10):
        assert not window.record(False)  # the five poison records slid out
    assert window.poison_count == 0
    for _ in range(5):
        assert not window.record(True)


def test_a_zero_share_stops_at_the_first_poison_record() -> None:
    assert PoisonWindow(size=200, max_share=0.0).record(True)


def test_backoff_doubles_up_to_the_bound() -> None:
    assert [backoff_delay(a, 0.1, 1.0) for a in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_delay(10_000, 0.1, 5.0) == 5.0


def test_dlq_headers_keep_the_originals_and_say_where_and_why() -> None:
    letter = DeadLetter(
        key=b"k",
        value=b"v",
        headers=(("trace", b"1"),),
        reason="not_json",
        message="bad" * 1000,
        topic="events",
        partition=2,
        offset=99,
    )
    headers = dlq_headers(letter, "group-a")
    assert headers[0] == ("trace", b"1")
    named = dict(headers)
    assert named["dlq.error.type"] == b"not_json"
    assert named["dlq.source.topic"] == b"events"
    assert named["dlq.source.partition"] == b"2"
    assert named["dlq.source.offset"] == b"99"
    assert named["dlq.consumer.group"] == b"group-a"
    assert len(named["dlq.error"]) == 1000  # bounded


def test_the_dlq_error_header_is_utf8_bounded_on_a_character_boundary() -> None:
    def header(message: str) -> bytes:
        letter = DeadLetter(None, None, (), "processing_error", message, "t", 0, 0)
        return dict(dlq_headers(letter, "g"))["dlq.error"]  # type: ignore[return-value]

    assert header("bad \ud800 thing") == b"bad \\ud800 thing"
    long = header("€" * 1000)  # 3 bytes each: cut to 999, not into a character
    assert long.decode("utf-8") == "€" * 333


@pytest.mark.parametrize(
    "changes",
    [
        # A trailing newline would make a second seen key for the same event.
        {"eventId": "0f8fad5b-d9cb-469f-a165-70867728950e\n"},
        {"timestamp": "2026-11-24T04:29:53.123Z\n"},
        # Other scripts' digits break the string order the time filters compare by.
        {"timestamp": "\u0662\u0660\u0662\u0666-11-24T04:29:53.123Z"},
    ],
)
def test_ids_and_timestamps_must_match_their_pattern_whole(changes: dict[str, str]) -> None:
    decision = decide(compact_json(record(**changes)), 0, 0, 65536, TYPES)
    assert isinstance(decision, Rejected)
    assert decision.reason == "invalid_schema"


def test_decide_safely_decides_as_decide_does() -> None:
    value = compact_json(record())
    assert decide_safely(value, 1, 2, 4096, TYPES) == decide(value, 1, 2, 4096, TYPES)
    assert decide_safely(b"nope", 1, 2, 4096, TYPES) == decide(b"nope", 1, 2, 4096, TYPES)


def test_a_record_whose_decision_raises_is_a_processing_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def buggy(*_: Any) -> Any:
        raise KeyError("\ud800 a bug")  # even its message is not UTF-8

    monkeypatch.setattr(processing, "decide", buggy)
    seen: list[tuple[Exception, int, int]] = []
    decision = decide_safely(b"{}", 4, 7, 4096, TYPES, lambda exc, p, o: seen.append((exc, p, o)))
    assert isinstance(decision, Rejected)
    assert (decision.reason, decision.partition, decision.offset) == ("processing_error", 4, 7)
    assert "KeyError" in decision.message
    decision.message.encode("utf-8")  # UTF-8 can carry it
    assert [(type(exc), p, o) for exc, p, o in seen] == [(KeyError, 4, 7)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ()),
        ([], ()),
        (
            [("a", b"1"), ("b", "2"), ("c", None), ("a", b"3")],
            (("a", b"1"), ("b", b"2"), ("c", b""), ("a", b"3")),
        ),
        ({"a": b"1", "b": "2", "c": None}, (("a", b"1"), ("b", b"2"), ("c", b""))),
    ],
)
def test_consumed_headers_are_normalised_to_bytes_in_order(
    raw: Any, expected: tuple[tuple[str, bytes], ...]
) -> None:
    assert normalise_headers(raw) == expected

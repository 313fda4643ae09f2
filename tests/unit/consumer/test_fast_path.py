"""Property: the consumer's fast path decides every record exactly as marshmallow does.

`decode_event` (`decode_record` before its event type check) tries orjson plus a
hand-written restatement of EventRecordSchema (`fast_record`) and hands whatever that does
not accept to `checked_record`, the stdlib parser plus marshmallow. These properties run
both on near-valid records (wrong types, missing and extra fields, bad uuids and
timestamps, bools for schemaVersion, the original service's shape, odd number literals,
invalid UTF-8) and require:

* the same decision: both accept with identical records and byte-identical JSON, or both
  reject with the same reason and message;
* the fast path never accepts what marshmallow rejects, and accepts every valid record
  except the few it defers on purpose (floats beyond +-2**63, nesting orjson cannot
  write), so valid traffic really takes it.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumer_service.pipeline.processing import (
    InvalidRecord,
    checked_record,
    decode_event,
    fast_record,
)
from shared.event_rules import EVENT_TYPE_MAX, USER_ID_MAX
from tests.strategies import (
    any_text,
    identical,
    json_values,
    payloads,
    text_near_the_rule,
    usual_text,
)

MAX_BYTES = 64 * 1024
PROPERTY = settings(
    max_examples=600,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

UUID = "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed"
TIMESTAMP = "2026-11-24T04:29:53.123Z"


def reference(value: bytes | None) -> tuple[dict[str, Any], bytes] | InvalidRecord:
    """What the consumer decided before the fast path: size check, stdlib, marshmallow."""
    try:
        if value is None or len(value) > MAX_BYTES:
            return decode_event(value, MAX_BYTES)  # these checks come before any parse
        return checked_record(value)
    except InvalidRecord as exc:
        return exc


def decided(value: bytes | None) -> tuple[dict[str, Any], bytes] | InvalidRecord:
    try:
        return decode_event(value, MAX_BYTES)
    except InvalidRecord as exc:
        return exc


def assert_same_decision(value: bytes | None) -> None:
    want, got = reference(value), decided(value)
    if isinstance(want, InvalidRecord):
        assert isinstance(got, InvalidRecord), (value, got)
        assert (got.reason, str(got)) == (want.reason, str(want))
    else:
        assert not isinstance(got, InvalidRecord), (value, got)
        assert identical(got[0], want[0]), (got[0], want[0])
        assert got[1] == want[1]


def deferred_on_purpose(record: dict[str, Any]) -> bool:
    """A valid record the fast path leaves to the stdlib path by design."""

    def walk(value: Any, depth: int) -> bool:
        if isinstance(value, float) and abs(value) >= 2.0**63:
            return True
        if type(value) is int and not -(2**63) <= value < 2**64:
            return True  # orjson reads it as a float
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict | list):
            return depth > 250 or any(walk(c, depth + 1) for c in children)
        return False

    return walk(record, 1)


def assert_fast_path_agrees(value: bytes) -> None:
    """fast_record accepts what marshmallow accepts (bar the deferred), nothing else."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return  # not the fast path's to judge: decode_record goes to the stdlib
    fast = fast_record(data) if type(data) is dict else None
    want = reference(value)
    if isinstance(want, InvalidRecord):
        assert fast is None, (value, want)
    elif fast is None:
        assert deferred_on_purpose(want[0]), value
    else:
        assert identical(fast[0], want[0]) and fast[1] == want[1]


# -- near-valid records -----------------------------------------------------------------

uuids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: str(u) + "\n"),
    st.uuids().map(lambda u: str(u).replace("-", "")),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    any_text,
)


def shared_format(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


timestamps = st.one_of(
    st.datetimes().map(shared_format),
    st.just(TIMESTAMP),
    st.sampled_from(
        [
            TIMESTAMP + "\n",  # re.match with `$`: accepted by marshmallow
            "٢٠٢٦-11-24T04:29:53.123Z",  # Unicode digits: \d matches them
            "2026-11-24T04:29:53Z",
            "2026-11-24T04:29:53.123z",
            "2026-11-24 04:29:53.123Z",
            "2026-11-24T04:29:53.123+00:00",
            "",
        ]
    ),
    any_text,
)
lengths_of = {
    "userId": st.one_of(
        usual_text.filter(bool),
        st.text(min_size=USER_ID_MAX - 1, max_size=USER_ID_MAX + 1),
        st.just(""),
        any_text,
        text_near_the_rule,
    ),
    "eventType": st.one_of(
        st.sampled_from(["LOGIN", "LOGOUT", "PRODUCT_VIEW", "NEW_TYPE"]),
        st.text(min_size=EVENT_TYPE_MAX - 1, max_size=EVENT_TYPE_MAX + 1),
        st.just(""),
        any_text,
    ),
}
versions = st.one_of(
    st.just(1),
    st.just(1),
    st.sampled_from([2, 0, -1, True, False, 1.0, "1", None, 2**63, 2**64, 2**70, [1], {}]),
    st.integers(),
)
wrong_values = st.one_of(json_values, st.sampled_from([None, True, 1, 1.5, "x", [], {}]))
FIELDS = ("eventId", "userId", "eventType", "timestamp", "payload", "schemaVersion")


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventId": draw(uuids),
        "userId": draw(lengths_of["userId"]),
        "eventType": draw(lengths_of["eventType"]),
        "timestamp": draw(timestamps),
        "payload": draw(st.one_of(payloads, payloads, st.none(), wrong_values)),
        "schemaVersion": draw(versions),
    }
    for _ in range(draw(st.integers(0, 2))):
        change = draw(st.sampled_from(["drop", "extra", "wrong", "original", "shuffle"]))
        if change == "drop" and record:
            record.pop(draw(st.sampled_from(sorted(record))))
        elif change == "extra":
            record[draw(st.one_of(st.sampled_from(["extra", "SchemaVersion"]), any_text))] = draw(
                wrong_values
            )
        elif change == "wrong":
            record[draw(st.sampled_from(FIELDS))] = draw(wrong_values)
        elif change == "original":
            # The replaced service's shape: no schemaVersion, payload maybe absent or null.
            record.pop("schemaVersion", None)
            payload = draw(st.sampled_from(["keep", "absent", "null"]))
            if payload == "absent":
                record.pop("payload", None)
            elif payload == "null":
                record["payload"] = None
        else:
            keys = draw(st.permutations(list(record)))
            record = {k: record[k] for k in keys}
    return record


def encoded(record: Any, ascii_only: bool) -> bytes:
    # allow_nan writes NaN/Infinity; surrogatepass turns a lone surrogate into bytes that
    # are not UTF-8: both must be refused by both paths alike.
    text = json.dumps(record, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@PROPERTY
@given(record=records(), ascii_only=st.booleans())
@example(record={"eventId": UUID, "userId": "u", "eventType": "LOGIN", "timestamp": TIMESTAMP,
                 "payload": {}, "schemaVersion": True}, ascii_only=False)  # fmt: skip
@example(record={"eventId": UUID, "userId": "u", "eventType": "LOGIN", "timestamp": TIMESTAMP,
                 "payload": {"n": 2**64, "f": 1e-7, "g": 2.0**70}, "schemaVersion": 1},
         ascii_only=False)  # fmt: skip
@example(record={"eventId": UUID, "userId": "u", "eventType": "LOGIN",
                 "timestamp": TIMESTAMP}, ascii_only=True)  # fmt: skip
@example(record={"eventId": UUID, "userId": "\ud800", "eventType": "LOGIN",
                 "timestamp": TIMESTAMP, "payload": {}}, ascii_only=True)  # fmt: skip
def test_near_valid_records_are_decided_alike(record: dict[str, Any], ascii_only: bool) -> None:
    value = encoded(record, ascii_only)
    assert_same_decision(value)
    assert_fast_path_agrees(value)


numbers = st.from_regex(
    r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
)


@PROPERTY
@given(literal=numbers, where=st.sampled_from(["payload", "nested", "version"]))
@example(literal="18446744073709551616", where="payload")  # orjson: a float
@example(literal="-9223372036854775809", where="nested")
@example(literal="1e400", where="payload")
@example(literal="0.1000000000000000055511151231257827", where="payload")
@example(literal="18446744073709551616", where="version")
def test_number_literals_are_decided_alike(literal: str, where: str) -> None:
    base = {"eventId": UUID, "userId": "u", "eventType": "LOGIN", "timestamp": TIMESTAMP}
    value = {
        "payload": '"payload":{"x":%s}',
        "nested": '"payload":{"x":[{"y":%s}]}',
        "version": '"payload":{},"schemaVersion":%s',
    }[where] % literal
    if where != "version":
        value += ',"schemaVersion":1'
    raw = (json.dumps(base)[:-1] + "," + value + "}").encode()
    assert_same_decision(raw)
    assert_fast_path_agrees(raw)


@PROPERTY
@given(record=records(), cut=st.integers(0, 400), junk=st.binary(max_size=4))
def test_damaged_bytes_are_decided_alike(record: dict[str, Any], cut: int, junk: bytes) -> None:
    value = encoded(record, False)
    assert_same_decision(value[:cut] + junk + value[cut:])
    assert_same_decision(value[:cut])


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"x" * (MAX_BYTES + 1),
        b"[]",
        b'"text"',
        b"\xef\xbb\xbf{}",
        b'{"a":' * 300 + b"1" + b"}" * 300,
        # Valid, nested deeper than orjson writes (254) but within our bound (256), and
        # one level beyond it; with a float, the stdlib writes what orjson cannot.
        *(
            (
                f'{{"eventId":"{UUID}","userId":"u","eventType":"LOGIN","timestamp":"{TIMESTAMP}",'
                f'"payload":{{"a":{"[" * k}{x}{"]" * k}}},"schemaVersion":1}}'
            ).encode()
            for k in (253, 254, 255)
            for x in ("1", "1.5")
        ),
    ],
)
def test_edge_values_are_decided_alike(value: bytes | None) -> None:
    assert_same_decision(value)


def test_a_typical_record_takes_the_fast_path_with_the_stdlib_bytes() -> None:
    record = {
        "eventId": str(uuid.uuid4()),
        "userId": "usér-ü",
        "eventType": "PRODUCT_VIEW",
        "timestamp": TIMESTAMP,
        "payload": {"sku": "X-1", "qty": 2, "tags": ["a", None, True], "\u2028": "\x00\x7f"},
        "schemaVersion": 1,
    }
    value = json.dumps(record, ensure_ascii=False).encode()
    fast = fast_record(orjson.loads(value))
    assert fast is not None
    assert fast[1] == json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


# -- floats: orjson writes them when it spells them as the stdlib does -----------------

finite = st.floats(allow_nan=False, allow_infinity=False)
floats_near_the_bounds = st.one_of(
    finite,
    st.floats(min_value=1e-4, max_value=1e-4 * (1 + 1e-9)),
    st.floats(min_value=1e-4 * (1 - 1e-9), max_value=1e-4),
    st.floats(min_value=1e-6, max_value=1e-3),
    st.floats(min_value=1e15, max_value=1e17),
    st.floats(min_value=2.0**62, max_value=2.0**64),
    st.sampled_from([0.0, -0.0, 1e-4, -1e-4, 9.999999999999999e-05, 5e-324, 1e16, 19.99]),
)


@PROPERTY
@given(x=floats_near_the_bounds, negative=st.booleans(), nested=st.booleans())
def test_floats_are_decided_and_written_alike(x: float, negative: bool, nested: bool) -> None:
    value = -x if negative else x
    payload: dict[str, Any] = {"x": [{"y": value}]} if nested else {"x": value, "n": 1}
    record = {"eventId": UUID, "userId": "u", "eventType": "LOGIN", "timestamp": TIMESTAMP,
              "payload": payload, "schemaVersion": 1}  # fmt: skip
    raw = json.dumps(record).encode()
    assert_same_decision(raw)
    assert_fast_path_agrees(raw)


def test_a_record_with_ordinary_floats_is_written_by_orjson_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stdlib encoder cost more than the rest of the fast path together; a price or a
    # coordinate must not need it.
    import shared.json_codec

    class NoStdlib:
        def encode(self, _value: Any) -> str:
            raise AssertionError("the stdlib encoder was called")

    payload = {"price": 19.99, "at": [48.8566, 2.3522, 0.0]}
    record = {"eventId": UUID, "userId": "u", "eventType": "PURCHASE", "timestamp": TIMESTAMP,
              "payload": payload, "schemaVersion": 1}  # fmt: skip
    raw = json.dumps(record).encode()
    want = checked_record(raw)
    monkeypatch.setattr(shared.json_codec, "_ENCODER", NoStdlib())
    got = fast_record(orjson.loads(raw))
    assert got is not None and got[1] == want[1]


def test_the_fast_path_writes_just_below_orjsons_nesting_limit_with_the_stdlib() -> None:
    # A record nested 255 or 256 levels is valid (MAX_NESTING) but deeper than orjson
    # writes: the fast path still decides it, with the stdlib's bytes.
    for extra in (253, 254):
        payload: Any = 1
        for _ in range(extra):
            payload = [payload]
        record = {"eventId": UUID, "userId": "u", "eventType": "LOGIN", "timestamp": TIMESTAMP,
                  "payload": {"a": payload}, "schemaVersion": 1}  # fmt: skip
        raw = json.dumps(record).encode()
        got = fast_record(orjson.loads(raw))
        assert got is not None and got == checked_record(raw)

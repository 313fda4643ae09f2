import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from shared.event_rules import TIMESTAMP_PATTERN
from shared.events import (
    EventInputSchema,
    EventRecordSchema,
    enrich,
    enrich_batch,
    new_event_id,
    random_event_ids,
    record_json,
    utc_timestamp,
)
from shared.json_codec import (
    MAX_JSON_NESTING,
    compact_json,
    has_long_digit_run,
    json_problem,
    nesting_exceeds,
    parse_json,
)
from tests.strategies import (
    EVENT_TYPES,
    identical,
    inputs,
    json_values,
    payloads,
    scalars,
    usual_text,
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


def test_idempotency_key_gives_a_version_5_id_that_never_changes() -> None:
    event = {"userId": "user-42", "eventType": "PRODUCT_VIEW", "payload": {"sku": "X-1"}}
    event_id = new_event_id(event, "order-7781")
    assert uuid.UUID(event_id).version == 5
    # Pinned: a change to the namespace or the encoding would give every retry in flight
    # across the upgrade a new id, i.e. a second stored copy.
    assert event_id == "2e67d106-190b-5bc9-858d-568b0268ef80"
    assert uuid.UUID(new_event_id(event)).version == 4


def keyed_id(event: dict[str, object], key: str) -> object:
    return enrich(event, idempotency_key=key)["eventId"]


def test_keyed_id_depends_on_key_and_each_field_of_the_event() -> None:
    base = {"userId": "u1", "eventType": "LOGIN", "payload": {"a": 1}}
    same = keyed_id(dict(base), "k")
    assert keyed_id(base, "k") == same
    variants = [
        keyed_id(base, "k2"),
        keyed_id({**base, "userId": "u2"}, "k"),
        keyed_id({**base, "eventType": "LOGOUT"}, "k"),
        keyed_id({**base, "payload": {"a": 2}}, "k"),
        keyed_id({**base, "payload": {"a": 1.0}}, "k"),
        keyed_id({**base, "payload": {}}, "k"),
    ]
    assert len({same, *variants}) == 1 + len(variants)


def test_payload_object_keys_in_any_order_give_the_same_id() -> None:
    one = {
        "userId": "u",
        "eventType": "LOGIN",
        "payload": {"a": 1, "b": {"x": [1, {"p": 0, "q": 1}], "y": 2}},
    }
    two = {
        "userId": "u",
        "eventType": "LOGIN",
        "payload": {"b": {"y": 2, "x": [1, {"q": 1, "p": 0}]}, "a": 1},
    }
    assert keyed_id(one, "k") == keyed_id(two, "k")
    # ...while list order is content.
    three = {
        "userId": "u",
        "eventType": "LOGIN",
        "payload": {"a": 1, "b": {"x": [{"p": 0, "q": 1}, 1], "y": 2}},
    }
    assert keyed_id(one, "k") != keyed_id(three, "k")
    # A missing payload is the empty one the input schema loads it as.
    assert keyed_id({"userId": "u", "eventType": "LOGIN"}, "k") == keyed_id(
        {"userId": "u", "eventType": "LOGIN", "payload": {}}, "k"
    )


def test_no_separator_in_a_field_makes_two_events_collide() -> None:
    def event(user: str) -> dict[str, object]:
        return {"userId": user, "eventType": "LOGIN", "payload": {}}

    # Each pair would encode alike if key and userId were joined by "\x00", ":" or '","'.
    assert keyed_id(event("a\x00b"), "k") != keyed_id(event("a"), "b\x00k")
    assert keyed_id(event("u"), "K:0") != keyed_id(event("0:u"), "K")
    assert keyed_id(event('u","LOGIN'), "k") != keyed_id(event("u"), 'k","LOGIN')


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


def ids(records: list[dict[str, object]]) -> list[object]:
    return [r["eventId"] for r in records]


def test_keyed_batch_ids_depend_on_each_item_never_on_its_position() -> None:
    first = ids(enrich_batch(EVENTS, idempotency_key="import-7"))
    assert ids(enrich_batch(EVENTS, idempotency_key="import-7")) == first
    assert first == [new_event_id(e, "import-7") for e in EVENTS]
    assert len(set(first)) == 3
    # A retry of any subset, in any order, keeps each event's id.
    assert ids(enrich_batch([EVENTS[1]], idempotency_key="import-7")) == [first[1]]
    assert ids(enrich_batch([EVENTS[2], EVENTS[0]], idempotency_key="import-7")) == [
        first[2],
        first[0],
    ]
    assert ids(enrich_batch(EVENTS[::-1], idempotency_key="import-7")) == first[::-1]


def test_single_event_and_batch_item_under_one_key_are_one_event() -> None:
    in_batch = ids(enrich_batch(EVENTS, idempotency_key="K"))
    # The same event under the same key, through either endpoint: a retry.
    assert enrich(EVENTS[0], idempotency_key="K")["eventId"] == in_batch[0]
    assert enrich(EVENTS[1], idempotency_key="K")["eventId"] == in_batch[1]
    # "K:0" is another key, whatever the batch items are numbered.
    assert enrich(EVENTS[0], idempotency_key="K:0")["eventId"] not in in_batch


def test_reused_key_with_a_different_event_gives_a_new_id() -> None:
    login = enrich({"userId": "u1", "eventType": "LOGIN", "payload": {}}, idempotency_key="K2")
    logout = enrich({"userId": "u1", "eventType": "LOGOUT", "payload": {}}, idempotency_key="K2")
    assert login["eventId"] != logout["eventId"]
    assert EventRecordSchema().load(login) == login


def test_identical_items_share_an_id_only_under_a_key() -> None:
    twice = [EVENTS[0], dict(EVENTS[0])]
    keyed = ids(enrich_batch(twice, idempotency_key="k"))
    assert keyed[0] == keyed[1]  # why the producer refuses such a batch
    assert len(set(ids(enrich_batch(twice)))) == 2


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


ORIGINAL = {
    "eventId": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
    "userId": "user-7",
    "eventType": "LOGIN",
    "timestamp": "2025-03-01T09:15:27.041Z",
    "payload": {"device": "web"},
}


def test_a_record_without_schema_version_loads_as_version_1_of_the_original_shape() -> None:
    schema = EventRecordSchema()
    loaded = schema.load(ORIGINAL)
    assert loaded == {**ORIGINAL, "schemaVersion": 1}
    assert list(loaded)[-1] == "schemaVersion"  # stored in the same field order as ours
    assert "schemaVersion" not in ORIGINAL  # the input is not modified
    without_payload = {k: v for k, v in ORIGINAL.items() if k != "payload"}
    assert schema.load(without_payload)["payload"] == {}
    assert schema.load({**ORIGINAL, "payload": None})["payload"] == {}
    assert schema.load([ORIGINAL, without_payload], many=True) == [
        {**ORIGINAL, "schemaVersion": 1},
        {**without_payload, "payload": {}, "schemaVersion": 1},
    ]
    # A record that names its version gets no such help.
    with pytest.raises(ValidationError, match="payload"):
        schema.load({**without_payload, "schemaVersion": 1})
    with pytest.raises(ValidationError, match="schemaVersion"):
        schema.load({**ORIGINAL, "schemaVersion": None})


def test_timestamps_have_four_digit_years_so_they_sort_as_instants() -> None:
    # strftime("%Y") wrote "999-...", which sorts after "2026-..." as a string.
    assert utc_timestamp(datetime(999, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)) == (
        "0999-01-02T03:04:05.678Z"
    )
    assert utc_timestamp(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    assert re.match(TIMESTAMP_PATTERN, utc_timestamp(datetime(42, 6, 1, tzinfo=UTC)))
    assert utc_timestamp(datetime(999, 1, 1, tzinfo=UTC)) < utc_timestamp(datetime(2026, 1, 1))


# --- The fast paths: each must give exactly what the slow path gives. ---

_PROPERTY = settings(
    max_examples=600,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _reject(name: str) -> NoReturn:
    raise ValueError(name)


def _stdlib(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", json.loads(raw, parse_constant=_reject)
    except (ValueError, RecursionError):
        return "refused", None


def _fast(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse_json(raw)[0]
    except (ValueError, RecursionError):
        return "refused", None


numbers_as_text = st.one_of(
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z"),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
json_texts = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False, allow_nan=True)),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    inputs.map(lambda v: json.dumps(v, ensure_ascii=False, allow_nan=True)),
    numbers_as_text,
    numbers_as_text.map(lambda n: '{"payload":{"n":' + n + "}}"),
)


def _encoded(text: str) -> bytes:
    # Lone surrogates cannot be UTF-8: such text reaches the server as its bytes anyway.
    return text.encode("utf-8", "surrogatepass")


def _mutated(data: st.DataObject, raw: bytes) -> bytes:
    if not raw or not data.draw(st.booleans()):
        return raw
    at = data.draw(st.integers(0, len(raw) - 1))
    return raw[:at] + data.draw(st.binary(min_size=0, max_size=2)) + raw[at + 1 :]


@_PROPERTY
@given(data=st.data(), text=json_texts)
@example(data=None, text="18446744073709551616")  # orjson would read 2**64 as a float
@example(data=None, text="-9223372036854775809")
@example(data=None, text="[1e400]")
@example(data=None, text='"\\ud800"')
@example(data=None, text="\ufeff{}")  # a UTF-8 byte order mark
@example(data=None, text='{"a": NaN}')
@example(data=None, text='{"a":1,"a":2}')
@example(data=None, text="[" * 2000 + "]" * 2000)
@example(data=None, text="2.2250738585072011e-308")
def test_parse_json_accepts_refuses_and_reads_exactly_as_the_standard_library(
    data: st.DataObject | None, text: str
) -> None:
    raw = _encoded(text)
    if data is not None:
        raw = _mutated(data, raw)
    want, got = _stdlib(raw), _fast(raw)
    assert want[0] == got[0], raw
    assert identical(want[1], got[1]), raw


def test_parse_json_is_strict_only_for_what_orjson_read() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x"]}') == ({"a": [1, 2.5, "x"]}, True)
    assert parse_json(b"[18446744073709551616]") == ([2**64], False)
    value, strict = parse_json(b'["\\ud800", 1e400]')
    assert strict is False and value[0] == "\ud800" and value[1] == float("inf")
    # What orjson read never needs the encoding pass of json_problem, only the nesting.
    assert json_problem(value, strict=False) is not None
    deep = "[" * (MAX_JSON_NESTING + 1) + "]" * (MAX_JSON_NESTING + 1)
    parsed, strict = parse_json(deep.encode())
    assert strict is True and json_problem(parsed, strict=True) is not None


# Runs of digits of every length around 19, split by the bytes next to "0" and "9" in
# ASCII ("/" and ":"), by other text, and by "9" with its high bit set.
_digit_runs = st.lists(
    st.tuples(
        st.integers(0, 22).flatmap(
            lambda n: st.binary(min_size=n, max_size=n).map(lambda b: bytes(48 + c % 10 for c in b))
        ),
        st.sampled_from([b"/", b":", b" ", b"a", b"\xb9", b"-"]),
    ),
    max_size=4,
).map(lambda runs: b"".join(digits + separator for digits, separator in runs))


@settings(max_examples=300, derandomize=True, database=None)
@given(raw=_digit_runs)
@example(raw=b"1" * 19)
@example(raw=b"x" + b"1" * 18 + b"x")
def test_a_long_digit_run_is_found_as_the_regex_finds_it(raw: bytes) -> None:
    assert has_long_digit_run(raw) == (re.search(rb"[0-9]{19}", raw) is not None)


@_PROPERTY
@given(data=st.data(), text=json_texts)
def test_what_parse_json_calls_strict_always_encodes(data: st.DataObject, text: str) -> None:
    raw = _mutated(data, _encoded(text))
    try:
        value, strict = parse_json(raw)
    except (ValueError, RecursionError):
        return
    if strict:
        assert json_problem(value, strict=True) == json_problem(value)


# A small payload limit puts the size boundary within reach of the generated payloads.
_FAST_SCHEMAS = [
    EventInputSchema(("LOGIN", "LOGOUT", "PRODUCT_VIEW")),
    EventInputSchema(("LOGIN", "PRODUCT_VIEW"), max_payload_bytes=24),
]

anything = st.one_of(
    inputs,
    json_values,
    st.dictionaries(st.sampled_from(["userId", "eventType", "payload", "x"]), json_values),
    st.fixed_dictionaries(
        {"userId": usual_text, "eventType": st.sampled_from(EVENT_TYPES)},
        optional={"payload": st.one_of(payloads, json_values)},
    ),
    # Keys JSON cannot have: marshmallow refuses them, compact_json would write them.
    st.fixed_dictionaries(
        {"userId": st.just("u"), "eventType": st.just("LOGIN")},
        optional={"payload": st.dictionaries(st.one_of(st.integers(), st.none()), scalars)},
    ),
)


@_PROPERTY
@given(sent=anything, which=st.sampled_from([0, 1]))
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"x": "a" * 16}}, which=1)
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"x": "a" * 17}}, which=1)
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": None}, which=0)
@example(sent={"userId": "u" * 128, "eventType": "LOGIN"}, which=0)
@example(sent={"userId": "u" * 129, "eventType": "LOGIN"}, which=0)
@example(sent={"userId": "", "eventType": "LOGIN"}, which=0)
@example(sent={"userId": "u", "eventType": "LOGOUT"}, which=1)
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"x": float("nan")}}, which=0)
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {"\ud800": 1}}, which=0)
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {1: 1}}, which=0)
@example(sent={"userId": "u", "eventType": "LOGIN", "payload": {}, "extra": 1}, which=0)
@example(sent={"userId": "u", "payload": {}}, which=0)
@example(sent=[], which=0)
def test_the_fast_path_accepts_and_refuses_what_marshmallow_does(sent: Any, which: int) -> None:
    schema = _FAST_SCHEMAS[which]
    try:
        want = schema.load(sent)
    except ValidationError:
        want = None
    fast = schema.load_fast(sent)
    if want is None:
        assert fast is None
        return
    assert fast is not None
    event, payload_json = fast
    assert identical(event, want)
    assert payload_json == compact_json(want["payload"])


@_PROPERTY
@given(sent=inputs, key=st.one_of(st.none(), usual_text.filter(bool)))
def test_record_json_is_compact_json_of_the_record(sent: Any, key: str | None) -> None:
    try:
        event = EventInputSchema(("LOGIN", "LOGOUT", "PRODUCT_VIEW")).load(sent)
    except ValidationError:
        return
    record = enrich(event, idempotency_key=key)
    assert record_json(record, compact_json(record["payload"])) == compact_json(record)

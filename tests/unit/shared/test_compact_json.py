"""Property: `compact_json` is the stdlib encoder, byte for byte and exception for exception.

`compact_json` lets orjson write a value when `scan_json` proves orjson writes the same
bytes, and the stdlib encoder otherwise. These properties hold it, and
`compact_json_scanned`, to the reference encoder on arbitrary JSON-like values and on the
places where the two libraries part: floats at 1e-4 and at 2**63, NaN and infinities,
integers at and beyond 64 bits, nesting around orjson's 254 levels and far past Python's
recursion limit, lone surrogates in strings and keys, non-str keys, cycles, subclasses
and the types orjson writes but the stdlib refuses.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import shared.json_codec
from shared.json_codec import (
    JSON_TOO_DEEP,
    MAX_JSON_NESTING,
    ORJSON_MAX_NESTING,
    compact_json,
    compact_json_scanned,
    json_problem,
    nesting_exceeds,
    scan_json,
)
from tests.strategies import any_text, json_values

PROPERTY = settings(
    max_examples=1500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def reference(value: Any) -> bytes | tuple[type[BaseException], str]:
    """What compact_json was before orjson: the stdlib encoder alone."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode()
    except (ValueError, TypeError, RecursionError) as exc:
        return type(exc), str(exc)


def outcome(encode: Any, value: Any) -> bytes | tuple[type[BaseException], str]:
    try:
        result: bytes = encode(value)
        return result
    except (ValueError, TypeError, RecursionError) as exc:
        return type(exc), str(exc)


def assert_like_the_stdlib(value: Any) -> None:
    want = reference(value)
    assert outcome(compact_json, value) == want, value
    for limit in (1, 3, ORJSON_MAX_NESTING, MAX_JSON_NESTING):
        found = scan_json(value, limit)
        got = outcome(lambda v, found=found: compact_json_scanned(v, found), value)
        assert got == want, (value, limit)


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


class Mapping_(dict[Any, Any]):
    pass


class Colour(enum.IntEnum):
    RED = 1


class Mood(enum.Enum):
    HAPPY = "happy"


@dataclasses.dataclass
class Point:
    x: int


floats_at_the_bounds = st.one_of(
    st.floats(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-4 * (1 - 1e-9), max_value=1e-4 * (1 + 1e-9)),
    st.floats(min_value=-1e-4 * (1 + 1e-9), max_value=-1e-4 * (1 - 1e-9)),
    st.floats(min_value=1e-7, max_value=1e-3),
    st.floats(min_value=1e15, max_value=1e17),
    st.floats(min_value=2.0**62, max_value=2.0**65),
    st.floats(min_value=-(2.0**65), max_value=-(2.0**62)),
    st.sampled_from([0.0, -0.0, 1e-4, -1e-4, 9.999999999999999e-05, 5e-324, -5e-324]),
    st.sampled_from([1e16, 2.0**63, -(2.0**63), 1.7976931348623157e308]),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
integers_at_the_bounds = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**64) - 2, max_value=-(2**63) + 2),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=-(2**300), max_value=2**300),
)
strings = st.one_of(
    any_text,
    # Everything the encoders escape: controls, quote, backslash, and the separators
    # JavaScript minds.
    st.text(st.sampled_from('\x00\x01\x08\t\n\x0c\r\x1f\x7f"\\/\u2028\u2029\ufeffé😀\ud800\udfff')),
)
odd_things = st.sampled_from(
    [
        (1, "a"),
        Text("sub"),
        Number(7),
        Real(1.5),
        Real(1e-5),
        Mapping_(a=1),
        OrderedDict(a=[1]),
        Colour.RED,
        Mood.HAPPY,
        Point(1),
        datetime(2026, 11, 24, tzinfo=UTC),
        uuid.UUID(int=1),
        b"bytes",
        {1, 2},
        object(),
    ]
)
keys = st.one_of(
    strings,
    strings,
    strings,
    st.sampled_from([1, -2, 1.5, 1e-5, float("nan"), True, False, None, Text("k"), (1,)]),
    integers_at_the_bounds,
)
scalars = st.one_of(
    st.none(), st.booleans(), integers_at_the_bounds, floats_at_the_bounds, strings, odd_things
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=40,
)


def nested(value: Any, depth: int, as_dicts: bool) -> Any:
    for _ in range(depth):
        value = {"k": value} if as_dicts else [value]
    return value


@PROPERTY
@given(value=st.one_of(values, json_values))
@example(value={"a": 1e-05})
@example(value=[float("nan")])
@example(value={"a": 2**64})
@example(value={"\ud800": 1})
@example(value={1: 2, None: 3, False: 4, 1.5: 5})
@example(value=Mapping_(a=1e-5))
@example(value=OrderedDict(a=[[[]]]))
def test_compact_json_is_the_stdlib_encoder(value: Any) -> None:
    assert_like_the_stdlib(value)


@PROPERTY
@given(
    leaf=st.one_of(st.just(1), floats_at_the_bounds, strings, odd_things),
    depth=st.integers(250, 260),  # orjson writes 254 levels; MAX_JSON_NESTING is 256
    as_dicts=st.booleans(),
)
def test_nesting_around_orjsons_limit_is_written_alike(
    leaf: Any, depth: int, as_dicts: bool
) -> None:
    assert_like_the_stdlib(nested(leaf, depth, as_dicts))


def test_nesting_past_pythons_recursion_limit_raises_the_same_error() -> None:
    for as_dicts in (False, True):
        value = nested(1, 20_000, as_dicts)
        with pytest.raises(RecursionError):
            compact_json(value)
        with pytest.raises(RecursionError):
            compact_json_scanned(value, scan_json(value, 20_000))


def test_a_cycle_is_refused_as_the_stdlib_refuses_it() -> None:
    looped: list[Any] = [1.5]
    looped.append(looped)
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    for value in (looped, cyclic):
        assert scan_json(value) & JSON_TOO_DEEP
        assert outcome(compact_json, value) == reference(value)


def test_ordinary_values_are_written_by_orjson_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # The point of the exercise: the stdlib encoder cost ~15x orjson per payload.
    class NoStdlib:
        def encode(self, _value: Any) -> str:
            raise AssertionError("the stdlib encoder was called")

    ordinary = [
        {"productId": "sku-1", "price": 19.99, "currency": "EUR"},
        {},
        {"cart": [{"sku": "A", "qty": 2, "price": 9.5}], "coupon": None, "gift": False},
        {"geo": {"lat": 48.8566, "lon": -2.3522, "alt": 0.0}, "tags": ["a", "ü", "😀"]},
        {"big": 2**64 - 1, "small": -(2**63), "tiny": 1e-4, "huge": 1e300},
    ]
    want = [reference(v) for v in ordinary]
    monkeypatch.setattr(shared.json_codec, "_ENCODER", NoStdlib())
    assert [compact_json(v) for v in ordinary] == want


@PROPERTY
@given(value=st.one_of(values, json_values), depth=st.integers(0, MAX_JSON_NESTING + 2))
@example(value=OrderedDict(a=1), depth=MAX_JSON_NESTING)
@example(value=Mapping_(a=1), depth=MAX_JSON_NESTING - 1)
def test_json_problems_nesting_answer_is_nesting_exceeds(value: Any, depth: int) -> None:
    # json_problem checks nesting with the scan, and with nesting_exceeds (which also
    # looks into subclasses) only when the scan met a type it does not look into.
    deep = nested(value, depth, as_dicts=depth % 2 == 0)
    too_deep = json_problem(deep, strict=True) is not None
    assert too_deep == (isinstance(deep, dict | list) and nesting_exceeds(deep))


def test_an_orjson_that_spells_exponents_otherwise_loses_the_fast_path_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # orjson before 3.11.7 wrote 1e16 as `1e16`; the scan does not flag such floats, so
    # the version check is what keeps the stdlib's `1e+16`.
    import shared.json_codec as codec

    def old_orjson(value: object) -> bytes:
        return json.dumps(value, separators=(",", ":")).replace("e+", "e").encode()

    monkeypatch.setattr(codec.orjson, "dumps", old_orjson)
    monkeypatch.setattr(codec, "_ORJSON_SPELLS_AS_STDLIB", False)
    assert codec.compact_json({"n": 1e16}) == b'{"n":1e+16}'
    assert codec.compact_json_scanned({"n": 1e16}, 0) == b'{"n":1e+16}'

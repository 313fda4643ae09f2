"""Encoding, keys and how batches are cut, without a network."""

from __future__ import annotations

import json
from collections import deque
from types import MappingProxyType

import pytest
from activity_client.batching import (
    ENVELOPE_BYTES,
    KEY_RUN_MAX,
    Item,
    KeyGroups,
    encode_event,
    halves,
    request_body,
    take_batch,
)


def test_encoding_is_canonical_and_strict() -> None:
    a = encode_event("u", "LOGIN", {"b": 1, "a": {"y": 2, "x": 1}})
    b = encode_event("u", "LOGIN", {"a": {"x": 1, "y": 2}, "b": 1})
    assert a == b == b'{"eventType":"LOGIN","payload":{"a":{"x":1,"y":2},"b":1},"userId":"u"}'
    assert encode_event("u", "LOGIN", None) == encode_event("u", "LOGIN", {})
    assert encode_event("u", "LOGIN", {"x": 1}) != encode_event("u", "LOGIN", {"x": 1.0})
    assert json.loads(encode_event("ü", "LOGIN", {"s": "€"}))["payload"] == {"s": "€"}
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    assert encode_event("u", "LOGIN", MappingProxyType({"x": 1})) == encode_event(
        "u", "LOGIN", {"x": 1}
    )
    for bad in ({"x": float("nan")}, {"x": float("inf")}, {"x": "\ud800"}, cyclic):
        with pytest.raises(ValueError):
            encode_event("u", "LOGIN", bad)
    for args in (("", "LOGIN", None), (1, "LOGIN", None), ("u", None, None), ("u", "X", [1])):
        with pytest.raises(TypeError):
            encode_event(*args)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_event("u", "LOGIN", {"x": object()})


def test_identical_events_never_share_a_key() -> None:
    groups = KeyGroups()
    login = encode_event("u", "LOGIN", None)
    logout = encode_event("u", "LOGOUT", None)
    k1 = groups.key_for(login)
    assert groups.key_for(logout) == k1
    k2 = groups.key_for(login)  # a repeat starts a new key
    assert k2 != k1
    assert groups.key_for(logout) == k2
    assert groups.key_for(encode_event("v", "LOGIN", None)) == k2


def test_a_key_covers_at_most_a_run_of_events() -> None:
    groups = KeyGroups()
    keys = [groups.key_for(encode_event("u", "LOGIN", {"n": n})) for n in range(KEY_RUN_MAX + 1)]
    assert len(set(keys[:KEY_RUN_MAX])) == 1 and keys[-1] != keys[0]


def items(sizes: list[int], keys: str = "") -> deque[Item]:
    return deque(Item(i, b"x" * size, keys[i] if keys else "k") for i, size in enumerate(sizes))


def test_take_batch_by_count_bytes_and_key() -> None:
    queue = items([10] * 7)
    assert [it.seq for it in take_batch(queue, 3, 10_000)] == [0, 1, 2]
    assert [it.seq for it in take_batch(queue, 3, 10_000)] == [3, 4, 5]
    assert [it.seq for it in take_batch(queue, 3, 10_000)] == [6]
    assert take_batch(queue, 3, 10_000) == []
    # Bytes: envelope + 3 items + 2 commas fit exactly; a fourth does not.
    queue = items([10] * 5)
    limit = ENVELOPE_BYTES + 3 * 10 + 2
    batch = take_batch(queue, 100, limit)
    assert len(batch) == 3 and len(request_body(batch)) == limit
    # An item alone over the limit still goes (the server decides), alone.
    queue = items([500, 10])
    assert [it.seq for it in take_batch(queue, 100, 100)] == [0]
    # A batch never mixes keys.
    queue = items([1] * 5, keys="aabbb")
    assert [it.seq for it in take_batch(queue, 100, 10_000)] == [0, 1]
    assert [it.seq for it in take_batch(queue, 100, 10_000)] == [2, 3, 4]


def test_request_body_and_halves() -> None:
    batch = [Item(i, encode_event("u", "LOGIN", {"n": i}), "k") for i in range(5)]
    assert [e["payload"]["n"] for e in json.loads(request_body(batch))["events"]] == [0, 1, 2, 3, 4]
    first, second = halves(batch)
    assert [it.seq for it in first] == [0, 1, 2] and [it.seq for it in second] == [3, 4]
    assert halves(batch[:1]) == (batch[:1], [])

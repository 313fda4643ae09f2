"""Events as the sender holds them, their idempotency keys, and how batches are cut.

An event is encoded once, when it is tracked, to the compact JSON item it will be in
every request (object keys sorted at every depth). Those bytes are also its identity:
the server derives an event's id from the `Idempotency-Key` and the event's content, so
two identical events under one key would be one event, and a keyed batch holding them is
refused (`422 duplicate_items`). `KeyGroups` therefore gives identical events different
keys: a key covers a run of consecutive, pairwise distinct events, and a repeat starts a
new key.
"""

from __future__ import annotations

import json
import json.encoder
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# Keys per run of events: at most this many events share one. Bounds the set of bodies
# a run remembers; a run may span several requests.
KEY_RUN_MAX = 1000
# `{"events":[` + `]}`.
ENVELOPE_BYTES = 13


def _not_json(value: object) -> object:
    raise TypeError(f"a payload cannot hold {type(value).__name__}: it is not JSON")


# The C encoder json.dumps builds on each call, built once: compact, keys sorted, NaN
# and infinities refused, non-ASCII text as UTF-8. Its markers are off (no cycle check:
# a cyclic payload ends in RecursionError, reported as ValueError).
_encode: Callable[[object, int], Sequence[str]] = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _not_json, json.encoder.encode_basestring, None, ":", ",", True, False, False
)


class Item:
    """One tracked event: its order number, its encoded body, its key, and its row in the
    spool (None without one)."""

    __slots__ = ("body", "key", "row", "seq")

    def __init__(self, seq: int, body: bytes, key: str, row: int | None = None) -> None:
        self.seq = seq
        self.body = body
        self.key = key
        self.row = row

    def event(self) -> dict[str, Any]:
        """The event as tracked, decoded again (for error and drop callbacks)."""
        value: dict[str, Any] = json.loads(self.body)
        return value

    def __repr__(self) -> str:
        return f"Item(seq={self.seq}, key={self.key!r}, body={self.body[:60]!r})"


def encode_event(user_id: str, event_type: str, payload: Mapping[str, Any] | None) -> bytes:
    """The event's request item as compact UTF-8 JSON with sorted keys.

    Raises TypeError for arguments of the wrong type or a payload JSON cannot hold, and
    ValueError for NaN or infinite numbers and unpaired surrogates: the server would
    refuse them, so the caller hears at once instead of through the error callback."""
    if type(user_id) is not str or not user_id:
        raise TypeError("user_id must be a non-empty str")
    if type(event_type) is not str or not event_type:
        raise TypeError("event_type must be a non-empty str")
    if payload is None:
        payload = {}
    elif type(payload) is not dict:
        if not isinstance(payload, Mapping):
            raise TypeError("payload must be a mapping (a JSON object) or None")
        payload = dict(payload)
    try:
        chunks = _encode({"userId": user_id, "eventType": event_type, "payload": payload}, 0)
        return "".join(chunks).encode()
    except UnicodeEncodeError:
        raise ValueError("the event holds an unpaired surrogate, which JSON cannot carry") from None
    except RecursionError:
        raise ValueError("the payload is nested too deeply (or refers to itself)") from None


def new_key() -> str:
    """A fresh Idempotency-Key, unique across processes and time."""
    return f"ac-{uuid.uuid4().hex}"


class KeyGroups:
    """Hands out keys so that no key covers two identical events (see the module's
    docstring). Not thread-safe: the caller holds its lock."""

    def __init__(self) -> None:
        self.key = new_key()
        self._bodies: set[bytes] = set()

    def key_for(self, body: bytes) -> str:
        """The key for the next event, whose encoded body is `body`."""
        if body in self._bodies or len(self._bodies) >= KEY_RUN_MAX:
            self.key = new_key()
            self._bodies.clear()
        self._bodies.add(body)
        return self.key


def take_batch(queue: deque[Item], max_events: int, max_bytes: int) -> list[Item]:
    """Pop the next batch from the head of `queue`: consecutive items under the head's
    key, at most `max_events` of them and at most `max_bytes` of request body. The first
    item is always taken, even alone over `max_bytes` (the server then decides)."""
    batch: list[Item] = []
    if not queue:
        return batch
    key = queue[0].key
    size = ENVELOPE_BYTES
    while queue and len(batch) < max_events:
        item = queue[0]
        if item.key != key:
            break
        size += len(item.body) + (1 if batch else 0)
        if batch and size > max_bytes:
            break
        batch.append(queue.popleft())
    return batch


def request_body(items: Sequence[Item]) -> bytes:
    """The `/events/batch` body for `items`, in their order."""
    return b'{"events":[' + b",".join(item.body for item in items) + b"]}"


def halves(items: Sequence[Item]) -> tuple[list[Item], list[Item]]:
    """`items` cut in two in order, the first half no smaller than the second."""
    middle = (len(items) + 1) // 2
    return list(items[:middle]), list(items[middle:])


def assign_key(items: Sequence[Item]) -> str:
    """Put `items` under a fresh key and return it. For the tail of a batch the server
    refused as holding repeats (`422 duplicate_items`) that this client's byte comparison
    missed (two encodings the server reads as one value): nothing of it was published, so
    a new key cannot double anything."""
    key = new_key()
    for item in items:
        item.key = key
    return key

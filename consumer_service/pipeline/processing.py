"""Deciding what to do with one Kafka record: store it, or dead-letter it.

Pure functions and values only (no Kafka client, no Redis), so every rule here is unit
tested without a network. The worker feeds it bytes and acts on the decision.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from marshmallow import ValidationError

from shared.errors import InvalidEvent
from shared.event_rules import (
    EVENT_TYPE_MAX,
    TIMESTAMP_PATTERN,
    USER_ID_FORBIDDEN,
    USER_ID_MAX,
    UUID_PATTERN,
)
from shared.events import EventRecordSchema
from shared.json_codec import (
    JSON_HUGE_FLOAT,
    JSON_TOO_DEEP,
    MAX_JSON_NESTING,
    compact_json,
    compact_json_scanned,
    json_problem,
    nesting_exceeds,
    scan_json,
)

# `unknown_event_type` is a well-formed event of a type outside this consumer's
# EVENT_TYPES: the one reason a later consumer may accept, so it has a name of its own
# for `pipeline-admin dlq replay --reason`. `processing_error` is the safety net: a record
# whose decision raised something this module did not foresee (see `decide_safely`).
PoisonReason = Literal[
    "too_large", "not_json", "invalid_schema", "unknown_event_type", "processing_error"
]

# Deepest nesting of objects and arrays a record may have. Python's json parses and
# writes nested values by recursion, and a value that only just fits at one call depth
# fails at a deeper one (the read API serves events from well inside Flask). A fixed
# bound far below the interpreter's recursion limit makes "accepted" mean "readable
# everywhere"; real event payloads are a few levels deep.
MAX_NESTING = MAX_JSON_NESTING

_RECORD_SCHEMA = EventRecordSchema()


class InvalidRecord(InvalidEvent):
    """A record that can never be processed: it goes to the dead-letter topic."""

    def __init__(self, reason: PoisonReason, message: str) -> None:
        super().__init__(message)
        self.reason: PoisonReason = reason


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid record, ready to be stored."""

    record: dict[str, Any]
    partition: int
    offset: int
    # The record's compact JSON, when decide() already produced it while checking that
    # the record can be written back; saves encoding every event twice.
    encoded: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def event_id(self) -> str:
        return str(self.record["eventId"])

    def stored_form(self, processed_at: str) -> bytes:
        """The StoredEventSchema JSON kept in Redis: the record plus where and when.

        The record's own JSON with three fields appended: the schema guarantees a
        non-empty object, and `processed_at` is our own ASCII timestamp."""
        body = self.encoded if self.encoded is not None else compact_json(self.record)
        tail = (
            f',"processedAt":"{processed_at}","partition":{self.partition},"offset":{self.offset}}}'
        )
        return body[:-1] + tail.encode()


@dataclass(frozen=True)
class Rejected:
    """A poison record and why."""

    reason: PoisonReason
    message: str
    partition: int
    offset: int


Decision = Accepted | Rejected


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity, which compact_json cannot write back as JSON;
    # such a record is poison, not an event.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # `1e400` is valid JSON syntax but parses to inf, which cannot be written back.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def safe_text(text: str) -> str:
    """`text` with anything UTF-8 cannot carry (unpaired surrogates, which a `"\\ud800"`
    escape in a record produces) spelled as backslash escapes, so it can go into a Kafka
    header or a log line."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def decode_record(
    value: bytes | None, max_bytes: int, event_types: Set[str]
) -> tuple[dict[str, Any], bytes]:
    """Bytes of a Kafka record value to a validated record dict and its compact JSON.

    Raises InvalidRecord when the value is missing, bigger than `max_bytes`, not UTF-8
    JSON we can read and write back (syntax, NaN/Infinity, numbers out of float range,
    unpaired surrogate escapes, nesting deeper than MAX_NESTING), or fails
    EventRecordSchema (`invalid_schema`); and, for a record that passes all that, when
    its eventType is not in `event_types` (`unknown_event_type`). A returned record
    always encodes with `compact_json`, and the returned bytes are that encoding.

    Most records take the fast path (`fast_record`: orjson and a hand-written check of
    the schema's rules). Whatever it does not accept, it hands to `checked_record` (the
    stdlib parser and marshmallow), which makes the decision and explains a rejection.
    So the fast path only ever saves time; tests/unit/consumer/test_fast_path.py proves
    both paths decide alike.
    """
    record, encoded = decode_event(value, max_bytes)
    if record["eventType"] not in event_types:
        # The type is 1-64 characters of anything: quoted as ASCII JSON for the header.
        raise InvalidRecord(
            "unknown_event_type",
            f"The eventType {json.dumps(record['eventType'])} is not one of this "
            "consumer's EVENT_TYPES.",
        )
    return record, encoded


def decode_event(value: bytes | None, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """`decode_record` without the event type set: any well-formed eventType passes."""
    if value is None:
        raise InvalidRecord("not_json", "The record has no value.")
    if len(value) > max_bytes:
        raise InvalidRecord(
            "too_large", f"The record value is {len(value)} bytes; the limit is {max_bytes}."
        )
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        # orjson refuses some of what the stdlib reads (lone surrogate escapes, 1e400):
        # the stdlib path decides those, as it always did.
        return checked_record(value)
    if type(data) is dict:
        fast = fast_record(data)
        if fast is not None:
            return fast
    return checked_record(value)


# The schema's FullRegexp validators call `fullmatch` on the same patterns: the fast
# path's answer is the same.
_UUID_MATCH = re.compile(UUID_PATTERN).fullmatch
_TIMESTAMP_MATCH = re.compile(TIMESTAMP_PATTERN).fullmatch
_USER_ID_FORBIDDEN = USER_ID_FORBIDDEN.search
_RECORD_FIELDS = frozenset(
    ("eventId", "userId", "eventType", "timestamp", "payload", "schemaVersion")
)
# What the payload's scan must not find for the fast path to decide: nesting beyond
# MAX_NESTING, and a float of 2**63 or more, since orjson parses an integer beyond 64
# bits as a float where the stdlib keeps an int (the stdlib path decides those records).
_UNSURE = JSON_TOO_DEEP | JSON_HUGE_FLOAT


def fast_record(data: dict[str, Any]) -> tuple[dict[str, Any], bytes] | None:
    """`(record, compact JSON)` exactly as `checked_record` would return them for the
    record whose orjson parse is `data`, or None when this check cannot tell (including
    every record that is poison): then `checked_record` decides.

    `data` must come from `orjson.loads` (object keys are strings, floats finite). The
    rules are EventRecordSchema's, restated: the same fields, types (strict integers, no
    bools), lengths and patterns, the original shape upgraded by `as_current`, and the
    nesting bound. marshmallow stays the schema of record; the property test keeps this
    function in step with it.
    """
    if "schemaVersion" not in data:
        data = EventRecordSchema.as_current(data)
    if len(data) != len(_RECORD_FIELDS) or not _RECORD_FIELDS.issuperset(data):
        return None
    event_id = data["eventId"]
    user_id = data["userId"]
    event_type = data["eventType"]
    timestamp = data["timestamp"]
    payload = data["payload"]
    version = data["schemaVersion"]
    if not (
        type(event_id) is str
        and _UUID_MATCH(event_id)
        and type(user_id) is str
        and 0 < len(user_id) <= USER_ID_MAX
        and _USER_ID_FORBIDDEN(user_id) is None
        and type(event_type) is str
        and 0 < len(event_type) <= EVENT_TYPE_MAX
        and type(timestamp) is str
        and _TIMESTAMP_MATCH(timestamp)
        and type(payload) is dict
        and type(version) is int
        and version >= 1
    ):
        return None
    # The record is level 1, its payload level 2.
    found = scan_json(payload, MAX_NESTING - 1)
    if found & _UNSURE:
        return None
    # In marshmallow's output order: the declared fields'.
    record = {
        "eventId": event_id,
        "userId": user_id,
        "eventType": event_type,
        "timestamp": timestamp,
        "payload": payload,
        "schemaVersion": version,
    }
    # The other fields are strings and an integer: the payload's scan is the record's.
    return record, compact_json_scanned(record, found)


def checked_record(value: bytes) -> tuple[dict[str, Any], bytes]:
    """decode_record's reference path for a value within the size limit: the stdlib
    parser and marshmallow. Decides every record the fast path does not accept, and
    explains a rejection with marshmallow's messages."""
    try:
        data = json.loads(
            value.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRecord(
            "not_json", safe_text(f"The record value is not UTF-8 JSON: {exc}")
        ) from None
    except RecursionError:
        raise InvalidRecord(
            "not_json", f"The record value is nested more than {MAX_NESTING} levels deep."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRecord("invalid_schema", "The record value is not a JSON object.")
    if nesting_exceeds(data, MAX_NESTING):
        raise InvalidRecord(
            "not_json", f"The record value is nested more than {MAX_NESTING} levels deep."
        )
    try:
        loaded: dict[str, Any] = _RECORD_SCHEMA.load(data)
    except ValidationError as exc:
        # ASCII JSON: the messages may quote field names from the record, surrogates too.
        raise InvalidRecord(
            "invalid_schema",
            f"The record fails the event schema: {json.dumps(exc.messages, default=str)}",
        ) from None
    # What is stored is this record plus ASCII fields, so if it encodes, so does the stored
    # form. Parsing accepts what writing refuses, e.g. a "\ud800" escape. Nesting was
    # checked above, so only the encoding is left to try.
    try:
        encoded = compact_json(loaded)
    except (ValueError, RecursionError):
        problem = json_problem(loaded)
        raise InvalidRecord(
            "not_json", f"The record value cannot be stored as JSON: {problem}."
        ) from None
    return loaded, encoded


def decide(
    value: bytes | None, partition: int, offset: int, max_bytes: int, event_types: Set[str]
) -> Decision:
    """Accepted when the record is a valid event of one of `event_types` that can be
    stored, Rejected with the reason otherwise. Raises only on a bug in these rules
    (`decide_safely` turns that into a `processing_error` rejection)."""
    try:
        record, encoded = decode_record(value, max_bytes, event_types)
        return Accepted(record, partition, offset, encoded)
    except InvalidRecord as exc:
        return Rejected(exc.reason, str(exc), partition, offset)


def decide_safely(
    value: bytes | None,
    partition: int,
    offset: int,
    max_bytes: int,
    event_types: Set[str],
    on_error: Callable[[Exception, int, int], None] | None = None,
) -> Decision:
    """`decide`, with the safety net: never raises an Exception. A record whose decision
    raises anything is Rejected as `processing_error` (the exception's repr as the
    message), after `on_error(exception, partition, offset)` was called (the worker logs
    the traceback there). Without the net, one such record would crash every replica that
    takes its partition, over and over, and stop the partition for good."""
    try:
        return decide(value, partition, offset, max_bytes, event_types)
    except Exception as exc:
        if on_error is not None:
            on_error(exc, partition, offset)
        return Rejected(
            "processing_error",
            safe_text(f"Unexpected error while processing the record: {exc!r}"),
            partition,
            offset,
        )


class PoisonWindow:
    """The poison guard: the last `size` records, and whether too many were poison.

    The limit is an absolute count, `max_share * size`, so a handful of bad records at
    start-up does not trip it, while a topic full of garbage trips it after at most
    `size` records instead of being drained into the dead-letter topic.
    """

    def __init__(self, size: int, max_share: float) -> None:
        self._window: deque[bool] = deque(maxlen=size)
        self._poison = 0
        self._limit = max_share * size

    @property
    def poison_count(self) -> int:
        return self._poison

    def record(self, poison: bool) -> bool:
        """Add one record; True when the poison count now exceeds the limit."""
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._poison -= 1
        self._window.append(poison)
        if poison:
            self._poison += 1
        return self._poison > self._limit


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff: initial, 2x, 4x ... capped at maximum (attempt starts at 0)."""
    return float(min(maximum, initial * (2 ** min(attempt, 32))))

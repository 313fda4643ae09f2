"""The event: its shapes on the wire, in Kafka and in storage, and how it is enriched.

Three schemas, one per boundary:

* `EventInputSchema` is what a client posts (`userId`, `eventType`, `payload`).
* `EventRecordSchema` is the Kafka record value the producer writes and the consumer
  validates; it adds `eventId`, `timestamp` and `schemaVersion`.
* `StoredEventSchema` is what the read API returns: the record plus where and when the
  consumer processed it.

Schemas load to plain dicts of JSON types so an event is serialised once per hop, without
conversions back and forth. The JSON encoding itself (what is written, what is refused)
is `shared.json_codec`'s.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, types, validate, validates_schema

from shared.json_codec import compact_json, json_problem

SCHEMA_VERSION = 1
# The version of records that carry an anonymousId, context, originalTimestamp or source
# (`EventRecordV2Schema`); /events/* keep writing version 1.
SCHEMA_VERSION_2 = 2
ORIGINAL_TIMESTAMP_MAX = 64
SOURCE_MAX = 64

USER_ID_MAX = 128
EVENT_TYPE_MAX = 64
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024

# Kafka record headers, so a consumer can route or filter without parsing the value.
HEADER_EVENT_TYPE = "eventType"
HEADER_TIMESTAMP = "timestamp"
HEADER_EVENT_ID = "eventId"
HEADER_SCHEMA_VERSION = "schemaVersion"

# Idempotency-Key + the event's content -> eventId (see `new_event_id`). Fixed forever:
# changing it, or the canonical encoding, gives a retried request a new eventId and so a
# second stored copy. It replaced 5b0c1f8e-2d4a-4f0e-9a57-3c1d2e6f7a10, under which the id
# hashed only "<userId>\0<key>" (and "<key>:<i>" for batch item i). Ids made that way
# never equal today's: a retry spanning that upgrade is stored as a new event.
IDEMPOTENCY_NAMESPACE = uuid.UUID("c66e4316-2589-47eb-9224-207c91522dbe")
# The tracking API's messageId + the caller -> eventId (see `message_event_id`). Fixed
# forever, for the same reason.
MESSAGE_ID_NAMESPACE = uuid.UUID("4d0f6a52-9b7e-4c1e-8f7c-2a9d3b51e6c4")
_MESSAGE_ID_NAMESPACE_BYTES = MESSAGE_ID_NAMESPACE.bytes

# ASCII digits only (`\d` would also take other scripts' digits, which break the string
# order the read API's time filters rely on). The patterns are also the OpenAPI documents'
# `pattern`s, so they stay valid ECMA regexes; Python checks them with `fullmatch`
# (FullRegexp), since a Python `$` also matches before a final newline.
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


# Characters a userId may not hold. A userId is echoed into log lines, Kafka keys, Redis
# key names, DLQ headers and the dashboard, and is read by people there:
# * every control character (category Cc: C0, DEL, C1), e.g. a newline that forges a
#   log line or a NUL that truncates a key in some tools;
# * the line and paragraph separators U+2028/U+2029 (Zl, Zp), line breaks to many
#   viewers and to JavaScript;
# * the bidirectional formatting characters (U+061C, U+200E/F, U+202A-E, U+2066-9), which
#   reorder how the text around them is shown, so an id can read as another one.
# Other format characters (Cf) are allowed: zero-width joiners are needed to spell words
# in Persian or Hindi and to build emoji, tag characters build flags, and none of them
# breaks a line or reorders text. Cc is closed by Unicode's stability policy, so the class
# is exact for every Unicode version (tests/unit/shared/test_user_id_rule.py checks it).
_FORBIDDEN_CLASS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
USER_ID_FORBIDDEN = re.compile(f"[{_FORBIDDEN_CLASS}]")
# The same rule as the OpenAPI documents' `pattern` of userId (valid in ECMA regexes too),
# so that clients and fuzzers generating from the documents know it.
USER_ID_PATTERN = f"^[^{_FORBIDDEN_CLASS}]*$"
USER_ID_FORBIDDEN_MESSAGE = (
    "Must not contain control or bidirectional formatting characters (found {found})."
)

_user_id_forbidden = USER_ID_FORBIDDEN.search

# EVENT_TYPES may list `*`: then free-text event names, as analytics SDKs send them
# ("Order Completed"), are admitted besides the listed ones: 1-EVENT_TYPE_MAX ASCII
# letters, digits and `_ . : / & ' ( ) + , -`, in words joined by single spaces. Every
# name EVENT_TYPES may list is such a name. No control, markup or quote character but
# the apostrophe, so a name is as safe in a log line, a Redis key or the dashboard as a
# listed one. (Each word starts after exactly one space: the pattern cannot backtrack.)
FREE_EVENT_NAMES = "*"
_NAME_WORD = r"[A-Za-z0-9_.:/&'()+,-]+"
FREE_EVENT_NAME_PATTERN = f"^{_NAME_WORD}(?: {_NAME_WORD})*$"
_free_name = re.compile(FREE_EVENT_NAME_PATTERN).fullmatch


class EventTypes(frozenset[str]):
    """The eventType values a service admits: the names of EVENT_TYPES and, when it lists
    `*` (FREE_EVENT_NAMES), every free-text name (FREE_EVENT_NAME_PATTERN). `in` is the
    test; iterating yields the listed names, `*` among them."""

    @property
    def free(self) -> bool:
        return frozenset.__contains__(self, FREE_EVENT_NAMES)

    def __contains__(self, name: object) -> bool:
        if name == FREE_EVENT_NAMES:
            return False
        if frozenset.__contains__(self, name):
            return True
        return (
            type(name) is str
            and len(name) <= EVENT_TYPE_MAX
            and self.free
            and _free_name(name) is not None
        )


class PlainText(validate.Regexp):
    """Rejects text holding a character of USER_ID_FORBIDDEN, naming the first one. A
    `Regexp` (of USER_ID_PATTERN) for the OpenAPI documents' sake; the check itself is a
    search for the first forbidden character."""

    def __init__(self) -> None:
        super().__init__(USER_ID_PATTERN)

    def __call__(self, value: Any) -> Any:
        found = _user_id_forbidden(value)
        if found is not None:
            raise ValidationError(
                USER_ID_FORBIDDEN_MESSAGE.format(found=f"U+{ord(found.group()):04X}")
            )
        return value


class FullRegexp(validate.Regexp):
    """`validate.Regexp` that must match the whole value: "<uuid>\\n" is not a uuid.
    An eventId with a trailing newline would get a seen mark of its own, and so be stored
    twice beside the same event without it."""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def utc_timestamp(now: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, e.g. `2026-11-24T04:29:53.123Z`; always a
    4-digit year, so these strings sort as the instants do (`strftime("%Y")` writes year
    999 as `999` on glibc)."""
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    return (
        f"{now.year:04d}-{now.month:02d}-{now.day:02d}T{now.hour:02d}:{now.minute:02d}:"
        f"{now.second:02d}.{now.microsecond // 1000:03d}Z"
    )


def new_event_id(event: Mapping[str, Any], idempotency_key: str | None = None) -> str:
    """A random UUIDv4, or with an idempotency key a UUIDv5 of the key and the event.

    With a key the id depends on the key and on the event's `userId`, `eventType` and
    `payload` (object keys in any order), and on nothing else: not on the timestamp, nor
    on where the event sat in a batch, nor on the endpoint it came through. So a retry of
    the same event under the same key, alone or in any batch, gets the same id and the
    consumer stores it once; a different event under a reused key gets its own id and is
    stored too; two identical events under one key get one id, and only one is stored.
    `event` is a loaded input event (a missing `payload` counts as `{}`).
    """
    if idempotency_key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, _identity(idempotency_key, event)))


def message_event_id(caller: str, message_id: str | None) -> str:
    """The eventId of a tracking API message: a UUIDv5 of `caller` (who sent it: the
    credential's subject, or the write key of an open producer) and the message's
    `messageId`, so an SDK's retry, alone or in another batch, before or after a
    producer restart, is stored once; a random UUIDv4 for a message without one."""
    if message_id is None:
        return str(uuid.uuid4())
    # The caller's length first, so no two (caller, messageId) pairs name alike.
    name = f"{len(caller)}:{caller}{message_id}".encode("utf-8", "surrogatepass")
    # uuid.uuid5, without building the UUID object twice (this runs once per message).
    digest = bytearray(hashlib.sha1(_MESSAGE_ID_NAMESPACE_BYTES + name).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50
    digest[8] = digest[8] & 0x3F | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _identity(idempotency_key: str, event: Mapping[str, Any]) -> str:
    # A JSON array of exactly these four values, not a joined string: every field is
    # quoted and escaped, so no choice of key or userId can make two different tuples
    # encode alike (as "K" with item 0 and "K:0" did under the old "<key>:<i>" names).
    # sort_keys makes the payload's object keys order-free at every depth; ensure_ascii
    # keeps even an unvalidated lone surrogate encodable.
    return json.dumps(
        [idempotency_key, event["userId"], event["eventType"], event.get("payload", {})],
        separators=(",", ":"),
        sort_keys=True,
        ensure_ascii=True,
        allow_nan=False,
    )


# The C string encoder `compact_json` uses for every string (see `record_json`).
_encode_string: Callable[[str], str] = json.encoder.encode_basestring


class PayloadSize(validate.Validator):
    """Rejects a payload whose compact JSON encoding exceeds `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __call__(self, value: Any) -> Any:
        try:
            size = len(compact_json(value))
        except (ValueError, RecursionError):
            problem = json_problem(value)
            raise ValidationError(f"Payload cannot be stored as JSON: {problem}.") from None
        if size > self.max_bytes:
            raise ValidationError(f"Payload is {size} bytes; the limit is {self.max_bytes}.")
        return value


def event_type_rule(listed: Sequence[str]) -> validate.Validator:
    """The validator of an input eventType: one of the `listed` names (EVENT_TYPES), or
    with `*` among them any free-text name (a pattern the OpenAPI documents show)."""
    if FREE_EVENT_NAMES not in listed:
        return validate.OneOf(listed)
    return _FreeName()


class _FreeName(FullRegexp):
    def __init__(self) -> None:
        super().__init__(
            FREE_EVENT_NAME_PATTERN,
            error=(
                f"Must be 1-{EVENT_TYPE_MAX} letters, digits and _ . : / & ' ( ) + , - "
                "in words joined by single spaces."
            ),
        )

    def __call__(self, value: Any) -> Any:
        if len(value) > EVENT_TYPE_MAX:
            raise ValidationError(self.error)
        return super().__call__(value)


class EventInputSchema(Schema):
    """What a client posts. Unknown fields are rejected (marshmallow's default RAISE)."""

    userId = fields.String(
        required=True, validate=[validate.Length(min=1, max=USER_ID_MAX), PlainText()]
    )
    eventType = fields.String(required=True)
    payload = fields.Dict(keys=fields.String(), load_default=dict)

    def __init__(
        self,
        event_types: Iterable[str],
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        listed = tuple(event_types)
        allowed = EventTypes(listed)
        self.fields["eventType"].validators = [event_type_rule(listed)]
        self.fields["payload"].validators = [PayloadSize(max_payload_bytes)]
        self._allowed = allowed
        self._max_payload_bytes = max_payload_bytes

    def load_fast(self, data: Any) -> tuple[dict[str, Any], bytes] | None:
        """`(self.load(data), compact_json(<its payload>))` when `load` accepts `data`; None
        when `load` would refuse it (or for anything but plain dicts and strings, which
        JSON never yields): then call `load` for marshmallow's words. The same rules in
        plain code, ~20x cheaper; tests/unit/shared/test_events.py proves by property
        that both accept and refuse the same inputs and load the same value. The schema's
        fields, and so the rules, are those this class declares: a subclass that changes
        them must override this method too."""
        if type(data) is not dict:
            return None
        user_id = data.get("userId")
        event_type = data.get("eventType")
        if type(user_id) is not str or not 1 <= len(user_id) <= USER_ID_MAX:
            return None
        if _user_id_forbidden(user_id):
            return None
        if type(event_type) is not str or event_type not in self._allowed:
            return None
        size = len(data)
        if size == 2:
            payload: Any = {}
        elif size == 3 and "payload" in data:
            payload = data["payload"]
            if type(payload) is not dict:
                return None
            for key in payload:
                if type(key) is not str:
                    return None
        else:
            return None  # an unknown field
        try:
            payload_json = compact_json(payload)
        except (ValueError, RecursionError):
            return None
        if len(payload_json) > self._max_payload_bytes:
            return None
        return {"userId": user_id, "eventType": event_type, "payload": payload}, payload_json


class EventRecordSchema(Schema):
    """The Kafka record value. Any well-formed eventType passes the schema: which types a
    consumer stores is its EVENT_TYPES setting, which it applies after this schema (a
    record of another type is dead-lettered as `unknown_event_type`, see
    consumer_service/pipeline/processing.py).

    `load` also accepts the record of the service this one replaces (the Node/KafkaJS
    design in ../shared/seed-architecture.md): `{eventId, userId, eventType, timestamp,
    payload}` with no `schemaVersion`. A record WITHOUT the `schemaVersion` key is version
    1 in that shape; it loads to the current form, with `schemaVersion: 1`, and an absent
    or null `payload` becomes `{}` (the old service normalised payloads to an object; a
    migration should not lose an event over it). Every other rule is the same for both
    shapes, and a record that does carry `schemaVersion` must have a `payload` object.
    """

    eventId = fields.String(required=True, validate=FullRegexp(UUID_PATTERN))
    userId = fields.String(
        required=True, validate=[validate.Length(min=1, max=USER_ID_MAX), PlainText()]
    )
    eventType = fields.String(required=True, validate=validate.Length(min=1, max=EVENT_TYPE_MAX))
    timestamp = fields.String(required=True, validate=FullRegexp(TIMESTAMP_PATTERN))
    payload = fields.Dict(keys=fields.String(), required=True)
    schemaVersion = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))

    # Versions whose records this schema hands to another schema (see `load`).
    version_schemas: ClassVar[dict[int, type[Schema]]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._delegates = {v: schema() for v, schema in self.version_schemas.items()}

    # An override rather than a @pre_load hook: marshmallow's hook machinery costs about
    # 2 µs per load (~10 % of the consumer's validation of a record), this check ~0.1 µs.
    def load(
        self,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        many: bool | None = None,
        partial: bool | types.StrSequenceOrSet | None = None,
        unknown: types.UnknownOption | None = None,
    ) -> Any:
        if isinstance(data, dict):
            data = self.as_current(data)
            version = data["schemaVersion"]
            if type(version) is int and version in self.version_schemas:
                return self._delegates[version].load(data, partial=partial, unknown=unknown)
        elif (self.many if many is None else many) and isinstance(data, list):
            data = [self.as_current(d) if isinstance(d, dict) else d for d in data]
        return super().load(data, many=many, partial=partial, unknown=unknown)

    @staticmethod
    def as_current(record: dict[str, Any]) -> dict[str, Any]:
        """`record` itself when it has a `schemaVersion`; else the original shape in the
        current form (a new dict): version 1, an absent or null payload as `{}`."""
        if "schemaVersion" in record:
            return record
        upgraded = dict(record)
        if upgraded.get("payload") is None:
            upgraded["payload"] = {}
        upgraded["schemaVersion"] = ORIGINAL_SCHEMA_VERSION
        return upgraded


# The version a record without `schemaVersion` (the replaced service's shape) has.
ORIGINAL_SCHEMA_VERSION = 1


def identity_field() -> fields.String:
    """An optional userId or anonymousId: userId's length and characters."""
    return fields.String(validate=[validate.Length(min=1, max=USER_ID_MAX), PlainText()])


def label_field(max_length: int) -> fields.String:
    """An optional text of 1-`max_length` characters under userId's character rule."""
    return fields.String(validate=[validate.Length(min=1, max=max_length), PlainText()])


class EventRecordV2Schema(Schema):
    """Version 2 of the Kafka record value: version 1's fields with `userId` optional, and
    `anonymousId`, `originalTimestamp`, `source` and `context` added (all optional).

    * `userId` or `anonymousId`, or both, must be set; each follows userId's rules. The
      Kafka key, and the store's user index, is `event_key(record)`: the userId when set,
      else the anonymousId.
    * `timestamp` is the producer's acceptance time, as in version 1; `originalTimestamp`
      is the client's own clock, kept as sent (any text of at most
      ORIGINAL_TIMESTAMP_MAX characters: clocks are wrong and formats vary).
    * `source` names the intake, e.g. `segment-api`.
    * `context` is an object of facts about the client (library, page, user agent, IP),
      bounded with the payload by the record's size and nesting limits.

    Field order is the order in which records are written (`record_v2`), so that a record
    reads back byte for byte as it was produced.
    """

    eventId = fields.String(required=True, validate=FullRegexp(UUID_PATTERN))
    userId = identity_field()
    anonymousId = identity_field()
    eventType = fields.String(required=True, validate=validate.Length(min=1, max=EVENT_TYPE_MAX))
    timestamp = fields.String(required=True, validate=FullRegexp(TIMESTAMP_PATTERN))
    originalTimestamp = label_field(ORIGINAL_TIMESTAMP_MAX)
    source = label_field(SOURCE_MAX)
    payload = fields.Dict(keys=fields.String(), required=True)
    context = fields.Dict(keys=fields.String())
    schemaVersion = fields.Integer(
        required=True, strict=True, validate=validate.Equal(SCHEMA_VERSION_2)
    )

    @validates_schema
    def _identified(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if "userId" not in data and "anonymousId" not in data:
            raise ValidationError("Either userId or anonymousId is required.", "userId")


class StoredEventSchema(EventRecordSchema):
    """An event of version 1 as the read API returns it."""

    processedAt = fields.String(required=True, validate=FullRegexp(TIMESTAMP_PATTERN))
    partition = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class StoredEventV2Schema(EventRecordV2Schema):
    """An event of version 2 as the read API returns it."""

    processedAt = fields.String(required=True, validate=FullRegexp(TIMESTAMP_PATTERN))
    partition = fields.Integer(required=True)
    offset = fields.Integer(required=True)


# Which schema loads a record of each version; a version not listed loads with version
# 1's schema, as every version did before version 2 existed.
RECORD_SCHEMAS: dict[int, type[Schema]] = {1: EventRecordSchema, 2: EventRecordV2Schema}
STORED_SCHEMAS: dict[int, type[Schema]] = {1: StoredEventSchema, 2: StoredEventV2Schema}
EventRecordSchema.version_schemas = {SCHEMA_VERSION_2: EventRecordV2Schema}
StoredEventSchema.version_schemas = {SCHEMA_VERSION_2: StoredEventV2Schema}


def record_v2(
    event_id: str,
    event: Mapping[str, Any],
    timestamp: str,
) -> dict[str, Any]:
    """A version 2 record value from `event`'s fields (`userId` and/or `anonymousId`,
    `eventType`, `payload`, and optionally `originalTimestamp`, `source`, `context`): a
    new dict in EventRecordV2Schema's order, absent optional fields left out."""
    record: dict[str, Any] = {"eventId": event_id}
    for name in ("userId", "anonymousId"):
        if name in event:
            record[name] = event[name]
    record["eventType"] = event["eventType"]
    record["timestamp"] = timestamp
    for name in ("originalTimestamp", "source"):
        if name in event:
            record[name] = event[name]
    record["payload"] = event.get("payload", {})
    if "context" in event:
        record["context"] = event["context"]
    record["schemaVersion"] = SCHEMA_VERSION_2
    return record


def event_key(record: Mapping[str, Any]) -> str:
    """Whom a record is about: its userId, or an anonymous record's anonymousId. The Kafka
    key (so one person's events keep their order) and the store's user index."""
    user_id = record.get("userId")
    return str(record["anonymousId"] if user_id is None else user_id)


def random_event_ids(count: int) -> list[str]:
    """`count` random UUIDv4 strings from ONE read of the OS's CSPRNG.

    One read rather than `uuid4()` per event: every `os.urandom` call releases the GIL, and
    in a threaded server busy with other requests each release can cost a thread a whole
    switch interval before it runs again. Profiling /events/batch under load showed a third
    of the request time in `uuid4`, nearly all of it waiting for the GIL.
    """
    raw = bytearray(os.urandom(16 * count))
    # What uuid.UUID(bytes=..., version=4) does to each 16 bytes, on all of them at once:
    # the version nibble 4 (byte 6) and the RFC 4122 variant bits 10 (byte 8).
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])
    hexed = raw.hex()
    return [
        f"{hexed[i : i + 8]}-{hexed[i + 8 : i + 12]}-{hexed[i + 12 : i + 16]}-"
        f"{hexed[i + 16 : i + 20]}-{hexed[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def _record(event_id: str, event: Mapping[str, Any], timestamp: str) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "userId": event["userId"],
        "eventType": event["eventType"],
        "timestamp": timestamp,
        "payload": event.get("payload", {}),
        "schemaVersion": SCHEMA_VERSION,
    }


def enrich(
    event: Mapping[str, Any], *, idempotency_key: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """A validated input event turned into a record value (a new dict, in a stable order).
    Its eventId is `new_event_id(event, idempotency_key)`."""
    return _record(new_event_id(event, idempotency_key), event, utc_timestamp(now))


def enrich_batch(
    events: Sequence[Mapping[str, Any]],
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Validated input events turned into record values, in input order.

    They share one `timestamp`, the moment the batch was accepted. Without a key the ids
    are random. With one, every item's id is `new_event_id(item, idempotency_key)`: it
    depends on the item alone, never on its position, so re-sending any subset of the
    batch, in any order, keeps each event's id. Identical items get identical ids; a
    caller that must store each item should refuse such a batch.
    """
    timestamp = utc_timestamp(now)
    if idempotency_key is None:
        ids = random_event_ids(len(events))
    else:
        ids = [new_event_id(e, idempotency_key) for e in events]
    return [_record(event_id, e, timestamp) for event_id, e in zip(ids, events, strict=True)]


def record_json(record: Mapping[str, Any], payload_json: bytes) -> bytes:
    """`compact_json(record)` for a record made by `enrich`/`enrich_batch`, byte for byte,
    given `payload_json == compact_json(record["payload"])`: the payload, the bulk of a
    record, is encoded once, by the validation that measured it. Raises as
    `compact_json` does."""
    # The string encoder alone, without the per-call set-up of a whole encoding pass.
    text = _encode_string
    head = (
        f'{{"eventId":{text(record["eventId"])},"userId":{text(record["userId"])},'
        f'"eventType":{text(record["eventType"])},"timestamp":{text(record["timestamp"])},'
        '"payload":'
    )
    tail = f',"schemaVersion":{int.__repr__(record["schemaVersion"])}}}'
    return b"".join((head.encode(), payload_json, tail.encode()))


def record_headers(record: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The Kafka headers that mirror a record's routing facts."""
    return [
        (HEADER_EVENT_TYPE, record["eventType"].encode()),
        (HEADER_TIMESTAMP, record["timestamp"].encode()),
        (HEADER_EVENT_ID, record["eventId"].encode()),
        (HEADER_SCHEMA_VERSION, str(record["schemaVersion"]).encode()),
    ]

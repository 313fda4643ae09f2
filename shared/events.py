"""The event: its shapes on the wire, in Kafka and in storage, and how it is enriched.

Three schemas, one per boundary:

* `EventInputSchema` is what a client posts (`userId`, `eventType`, `payload`).
* `EventRecordSchema` is the Kafka record value the producer writes and the consumer
  validates; it adds `eventId`, `timestamp` and `schemaVersion`.
* `StoredEventSchema` is what the read API returns: the record plus where and when the
  consumer processed it.

Version 2 (`EventRecordV2Schema`, `StoredEventV2Schema`, written by `record_v2`) adds
`anonymousId`, `context`, `originalTimestamp` and `source`; docs/schema-versions.md says
how versions evolve. The rules of single fields are `shared.event_rules`'.

Schemas load to plain dicts of JSON types so an event is serialised once per hop, without
conversions back and forth. The JSON encoding itself (what is written, what is refused)
is `shared.json_codec`'s.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, types, validate, validates_schema

from shared.event_rules import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    EVENT_TYPE_MAX,
    ORIGINAL_TIMESTAMP_MAX,
    SOURCE_MAX,
    TIMESTAMP_PATTERN,
    USER_ID_FORBIDDEN,
    USER_ID_MAX,
    UUID_PATTERN,
    EventTypes,
    FullRegexp,
    PayloadSize,
    PlainText,
    event_type_rule,
    identity_field,
    label_field,
)
from shared.json_codec import compact_json

# Bound once: the fast loaders call it per record.
_user_id_forbidden = USER_ID_FORBIDDEN.search

SCHEMA_VERSION = 1
# The version of records that carry an anonymousId, context, originalTimestamp or source
# (`EventRecordV2Schema`); /events/* keep writing version 1.
SCHEMA_VERSION_2 = 2

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

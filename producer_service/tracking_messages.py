"""The tracking API's messages (the HTTP API analytics SDKs such as Segment's and
RudderStack's speak) and how each becomes a version 2 event. Pure code: no Flask, no Kafka.

A message is `track`, `page`, `screen`, `identify`, `group` or `alias`. Each becomes one
event of schema version 2 (`shared.events.EventRecordV2Schema`):

| message    | eventType                              | payload                           |
|------------|----------------------------------------|-----------------------------------|
| `track`    | its `event` (must be admitted)         | its `properties`                  |
| `page`     | TRACKING_PAGE_EVENT_TYPE               | `properties`, plus `name` if sent |
| `screen`   | TRACKING_SCREEN_EVENT_TYPE             | `properties`, plus `name` if sent |
| `identify` | TRACKING_IDENTIFY_EVENT_TYPE           | its `traits`                      |
| `group`    | TRACKING_GROUP_EVENT_TYPE              | `{"groupId", "traits"}`           |
| `alias`    | TRACKING_ALIAS_EVENT_TYPE              | `{"previousId"}`                  |

`userId`, `anonymousId` and `context` are kept, the client's `originalTimestamp` (or its
`timestamp`) is kept as sent, and `source` is `segment-api`. A batch's own `context`
applies to each of its messages: a message's context is the batch's with the message's
own top-level keys over it (`merged_context`). A `track` whose event name
EVENT_TYPES does not admit is invalid; any other message whose mapped type EVENT_TYPES
does not admit is accepted and ignored (counted, not stored). Unknown fields
(`integrations`, `sentAt`, ...) are ignored, and so is a field whose value is null (SDKs
send `"anonymousId": null`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from shared.errors import InvalidEvent
from shared.event_rules import (
    ORIGINAL_TIMESTAMP_MAX,
    USER_ID_FORBIDDEN,
    USER_ID_MAX,
    EventTypes,
    PayloadSize,
    event_type_rule,
    identity_field,
    label_field,
)

KINDS = ("track", "page", "screen", "identify", "group", "alias")
SOURCE = "segment-api"
MESSAGE_ID_MAX = 255
NAME_MAX = 255


class MessageSchema(Schema):
    """One message of the tracking API, for the event types `event_types` (EVENT_TYPES)
    admits. Unknown fields are ignored (SDKs send many), and so is a field whose value is
    null: every field is nullable, and `message_event` drops nulls before loading."""

    class Meta:
        unknown = EXCLUDE

    def __init__(self, event_types: Iterable[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        listed = tuple(event_types)
        self.fields["event"].validators = [event_type_rule(listed)]
        self.allowed = EventTypes(listed)
        for field in self.fields.values():
            field.allow_none = True

    type = fields.String(required=True, validate=validate.OneOf(KINDS))
    messageId = label_field(MESSAGE_ID_MAX)
    userId = identity_field()
    anonymousId = identity_field()
    event = fields.String()
    name = label_field(NAME_MAX)
    properties = fields.Dict(keys=fields.String())
    traits = fields.Dict(keys=fields.String())
    context = fields.Dict(keys=fields.String())
    timestamp = label_field(ORIGINAL_TIMESTAMP_MAX)
    originalTimestamp = label_field(ORIGINAL_TIMESTAMP_MAX)
    groupId = identity_field()
    previousId = identity_field()

    @validates_schema
    def _complete(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if "userId" not in data and "anonymousId" not in data:
            raise ValidationError("Either userId or anonymousId is required.", "userId")
        needed = {"track": "event", "group": "groupId", "alias": "previousId"}.get(data["type"])
        if needed is not None and needed not in data:
            raise ValidationError(f"Required for a {data['type']} message.", needed)


@dataclass(frozen=True)
class TrackingRules:
    """What decides a message's fate: its schema (which holds the event names EVENT_TYPES
    admits), the type each kind but `track` maps to, and the size bound of payload and
    context."""

    schema: MessageSchema
    kind_types: Mapping[str, str]
    max_payload_bytes: int

    @classmethod
    def of(
        cls, event_types: Sequence[str], kind_types: Mapping[str, str], max_payload_bytes: int
    ) -> TrackingRules:
        return cls(MessageSchema(event_types), kind_types, max_payload_bytes)


class InvalidMessage(InvalidEvent):
    """A message that cannot become an event; `messages` says why, by field."""


class Ignored:
    """A message accepted and not stored: its kind maps to a type EVENT_TYPES does not
    admit."""


IGNORED = Ignored()


def message_event(
    message: Any,
    rules: TrackingRules,
    kind: str | None = None,
    batch_context: Mapping[str, Any] | None = None,
) -> Any:
    """The event fields (`record_v2`'s `event`, with `messageId` when sent) of one
    message, or IGNORED; raises InvalidMessage. `kind`: the kind a single-call route
    implies (a `type` the message holds must then agree). `batch_context`: the context of
    the batch the message came in (see `merged_context`).

    `fast_event` gives the same answer for most track messages, cheaper: call it first."""
    if not isinstance(message, dict):
        raise InvalidMessage("A message must be a JSON object.", {"_schema": ["Not an object."]})
    given = {k: v for k, v in message.items() if v is not None}
    if kind is not None and given.setdefault("type", kind) != kind:
        raise InvalidMessage("Invalid message.", {"type": [f"Must be {kind} here."]})
    try:
        loaded = rules.schema.load(given)
    except ValidationError as exc:
        raise InvalidMessage("Invalid message.", exc.messages_dict) from None
    kind = loaded["type"]
    if kind == "track":
        event_type = loaded["event"]
    else:
        event_type = rules.kind_types[kind]
        if event_type not in rules.schema.allowed:
            return IGNORED
    payload = _payload(kind, loaded)
    event: dict[str, Any] = {"eventType": event_type, "payload": payload, "source": SOURCE}
    for name in ("userId", "anonymousId", "messageId"):
        if name in loaded:
            event[name] = loaded[name]
    context = merged_context(batch_context, loaded.get("context"))
    if context is not None:
        event["context"] = context
    sent_at = loaded.get("originalTimestamp", loaded.get("timestamp"))
    if sent_at is not None:
        event["originalTimestamp"] = sent_at
    return event


def merged_context(
    batch_context: Mapping[str, Any] | None, own: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """A message's context within its batch: the batch's `context` with the message's
    own top-level keys over it (a shallow merge, as Segment's HTTP API applies a batch's
    context to each of its calls); either alone when the other is None."""
    if batch_context is None:
        return None if own is None else dict(own)
    if own is None:
        return dict(batch_context)
    return {**batch_context, **own}


def check_sizes(event: Mapping[str, Any], encoded_bytes: int, rules: TrackingRules) -> None:
    """Raise InvalidMessage when the event's payload or context is over
    `rules.max_payload_bytes` as compact JSON. `encoded_bytes`, the size of the whole
    record, bounds both: only a record bigger than the limit is measured part by part."""
    if encoded_bytes <= rules.max_payload_bytes:
        return
    size = PayloadSize(rules.max_payload_bytes)
    for name, field in (("properties", "payload"), ("context", "context")):
        value = event.get(field)
        if value is not None:
            try:
                size(value)
            except ValidationError as exc:
                raise InvalidMessage("Invalid message.", {name: exc.messages}) from None


# The text fields of a message and their length bounds, as MessageSchema declares them.
_TEXT_FIELDS = (
    ("messageId", MESSAGE_ID_MAX),
    ("userId", USER_ID_MAX),
    ("anonymousId", USER_ID_MAX),
    ("name", NAME_MAX),
    ("timestamp", ORIGINAL_TIMESTAMP_MAX),
    ("originalTimestamp", ORIGINAL_TIMESTAMP_MAX),
    ("groupId", USER_ID_MAX),
    ("previousId", USER_ID_MAX),
)
_forbidden = USER_ID_FORBIDDEN.search


def fast_event(
    message: Any,
    rules: TrackingRules,
    kind: str | None = None,
    batch_context: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """What `message_event` gives a `track` message that MessageSchema accepts, in plain
    code several times cheaper; None when unsure, including for every message the schema
    refuses and every other kind: then `message_event` decides and explains. `message`
    is as JSON parses (object keys are strings). tests/unit/producer/
    test_tracking_messages.py holds both to the same events and the same refusals."""
    event_type = _plain_track(message, rules, kind)
    if event_type is None:
        return None
    get = message.get
    properties = get("properties")
    own_context = get("context")
    # The message's own objects, not copies: nothing changes an event or its record.
    event: dict[str, Any] = {
        "eventType": event_type,
        "payload": {} if properties is None else properties,
        "source": SOURCE,
    }
    for name in ("userId", "anonymousId", "messageId"):
        value = get(name)
        if value is not None:
            event[name] = value
    if batch_context is not None:
        event["context"] = merged_context(batch_context, own_context)
    elif own_context is not None:
        event["context"] = own_context
    sent_at = get("originalTimestamp")
    if sent_at is None:
        sent_at = get("timestamp")
    if sent_at is not None:
        event["originalTimestamp"] = sent_at
    return event


def _plain_track(message: Any, rules: TrackingRules, kind: str | None) -> str | None:
    """The event type of a `track` message (of route `kind`, when given) whose every field
    `fast_event` reads passes MessageSchema's rules; None when any might not."""
    if type(message) is not dict:
        return None
    get = message.get
    message_type = get("type")
    if message_type is None:
        message_type = kind
    elif kind is not None and message_type != kind:
        return None
    event_type = get("event")
    if message_type != "track" or type(event_type) is not str:
        return None
    if event_type not in rules.schema.allowed:
        return None
    for name, limit in _TEXT_FIELDS:
        value = get(name)
        # isprintable() is False for every character USER_ID_FORBIDDEN holds (they are
        # all of categories Cc, Cf, Zl and Zp), and far cheaper than the search.
        if value is not None and (
            type(value) is not str
            or not 0 < len(value) <= limit
            or not (value.isprintable() or _forbidden(value) is None)
        ):
            return None
    for name in ("properties", "traits", "context"):
        value = get(name)
        if value is not None and type(value) is not dict:
            return None
    if get("userId") is None and get("anonymousId") is None:
        return None
    return event_type


def _payload(kind: str, loaded: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "identify":
        return dict(loaded.get("traits", {}))
    if kind == "group":
        return {"groupId": loaded["groupId"], "traits": loaded.get("traits", {})}
    if kind == "alias":
        return {"previousId": loaded["previousId"]}
    payload = dict(loaded.get("properties", {}))
    if kind in ("page", "screen") and "name" in loaded:
        payload.setdefault("name", loaded["name"])
    return payload


def batch_messages(body: Mapping[str, Any]) -> Sequence[Any] | None:
    """The messages of a `/v1/batch` body, or None when it is not a batch (no `batch`
    list)."""
    batch = body.get("batch")
    return batch if isinstance(batch, list) else None


def batch_context(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `context` of a `/v1/batch` body, which applies to each of its messages; None
    when absent or null. Raises InvalidEvent when it is not an object."""
    context = body.get("context")
    if context is None or type(context) is dict:
        return context
    raise InvalidEvent(
        "The batch's context must be an object.", {"context": ["Not a valid mapping type."]}
    )

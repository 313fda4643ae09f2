"""The producer API's own shapes: the batch request, its answers and the error body.

The event itself (input and record) comes from `shared.events`, so the consumer validates
with the same code; only what is specific to this HTTP API lives here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate

from shared import web
from shared.event_rules import DEFAULT_MAX_PAYLOAD_BYTES, UUID_PATTERN, FullRegexp
from shared.events import EventInputSchema


class BatchInputSchema(Schema):
    """`{"events": [...]}`: 1 to `max_events` input events."""

    events = fields.List(fields.Raw(), required=True)

    def __init__(
        self,
        event_types: Iterable[str],
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_events: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.item_schema = EventInputSchema(event_types, max_payload_bytes)
        events = self.fields["events"]
        assert isinstance(events, fields.List)
        # Nested keeps the item errors keyed by index ({"events": {3: {...}}}) and lets the
        # OpenAPI document show the item shape.
        events.inner = fields.Nested(self.item_schema)
        events.inner._bind_to_schema("events", events)
        events.validators = [validate.Length(min=1, max=max_events)]
        self.max_events = max_events

    def load_fast(self, data: Any) -> list[tuple[dict[str, Any], bytes]] | None:
        """Each item's `EventInputSchema.load_fast` result, in order, when `load` accepts
        `data`; None when it would refuse it (then call `load` for the messages). Proven
        equal to `load` by property, like the item's fast path."""
        if type(data) is not dict or len(data) != 1:
            return None
        events = data.get("events")
        if type(events) is not list or not 1 <= len(events) <= self.max_events:
            return None
        fast = self.item_schema.load_fast
        loaded = []
        for item in events:
            one = fast(item)
            if one is None:
                return None
            loaded.append(one)
        return loaded


class BatchAcceptedSchema(Schema):
    """201 from POST /events/batch: every event was acknowledged."""

    eventIds = fields.List(
        fields.String(validate=FullRegexp(UUID_PATTERN)),
        required=True,
        metadata={"description": "The events' ids, in input order."},
    )


class BatchItemSchema(Schema):
    index = fields.Integer(required=True)
    eventId = fields.String(required=True)
    status = fields.Integer(
        required=True,
        metadata={"description": "201 when acknowledged by Kafka, 503 when not."},
    )
    error = fields.String(metadata={"description": "Why the event was not acknowledged."})


class BatchReportSchema(Schema):
    """207 from POST /events/batch: some events were acknowledged, some were not."""

    eventIds = fields.List(fields.String(), required=True)
    items = fields.List(fields.Nested(BatchItemSchema), required=True)


class ErrorDetailSchema(web.ErrorDetailSchema):
    """The producer's error extras: per-field and per-item problems of invalid input."""

    fields_ = fields.Dict(
        data_key="fields",
        metadata={"description": "Field name -> problems, for an invalid single event."},
    )
    items = fields.List(
        fields.Dict(),
        metadata={
            "description": "`{index, fields}` per invalid event of a batch, or "
            "`{index, duplicateOf}` per repeated item of a keyed batch (the first 100)."
        },
    )
    omittedItems = fields.Integer(
        metadata={"description": "Invalid events of a batch not listed in `items`."}
    )


class ErrorSchema(web.ErrorSchema):
    error = fields.Nested(ErrorDetailSchema, required=True)


class TrackingBatchSchema(Schema):
    """The body of POST /v1/batch. Its messages are checked one by one (an invalid one
    is reported in the 200, not refused with the batch), so the document takes any item.
    Its `context` applies to each message; other fields (`integrations`, ...) are
    ignored."""

    class Meta:
        unknown = EXCLUDE

    batch = fields.List(
        fields.Raw(),
        required=True,
        metadata={"description": "Tracking API messages (TrackingMessage), in order."},
    )
    context = fields.Dict(
        keys=fields.String(),
        allow_none=True,
        metadata={
            "description": "Context of every message: each message's context is this one "
            "with the message's own top-level keys over it. Its size times the number of "
            "messages counts against the batch limit (413 beyond)."
        },
    )
    sentAt = fields.Raw(metadata={"description": "Ignored."})
    writeKey = fields.Raw(metadata={"description": "Ignored: the write key is Basic auth's."})


class InvalidMessageSchema(Schema):
    index = fields.Integer(required=True)
    messageId = fields.String()
    fields_ = fields.Dict(data_key="fields", required=True)


class TrackingAnswerSchema(Schema):
    """200 from the tracking API: every accepted message was acknowledged by Kafka."""

    success = fields.Boolean(required=True)
    accepted = fields.Integer(
        required=True, metadata={"description": "Messages published and acknowledged."}
    )
    ignored = fields.Integer(
        required=True,
        metadata={"description": "Messages of a kind whose event type is not admitted."},
    )
    invalid = fields.List(
        fields.Nested(InvalidMessageSchema),
        metadata={"description": "`{index, messageId, fields}` per invalid message (first 100)."},
    )
    invalidCount = fields.Integer(metadata={"description": "Invalid messages in all."})


class TrackingErrorSchema(ErrorSchema):
    """An error of the tracking API: the shared shape, plus the top-level `code` and
    `message` the SDKs read."""

    code = fields.String(required=True)
    message = fields.String(required=True)

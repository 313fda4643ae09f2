"""The read API's query and response shapes, built on the shared event schemas so the
OpenAPI document and the validation come from one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.events import EVENT_TYPE_MAX, USER_ID_MAX, StoredEventSchema, utc_timestamp

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class Timestamp(fields.Field[str]):
    """An ISO-8601 instant with a timezone, normalised to the stored timestamp format so
    it compares with stored timestamps as a string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("Not a valid timestamp.")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(
                "Not a valid ISO-8601 timestamp, e.g. 2026-11-24T04:29:53.123Z."
            ) from None
        if moment.tzinfo is None:
            raise ValidationError("The timestamp needs a timezone, e.g. a trailing Z.")
        try:
            return utc_timestamp(moment)
        except OverflowError:
            # 0001-01-01T00:00:00+01:00 is a valid ISO-8601 instant that has no UTC
            # datetime (it falls before year 1).
            raise ValidationError("The timestamp is out of range once converted to UTC.") from None


class ProcessedQuerySchema(Schema):
    """Query of GET /events/processed. Unknown parameters are rejected."""

    limit = fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Events per page, 1 to {MAX_LIMIT}."},
    )
    cursor = fields.String(
        validate=validate.Regexp(r"^[0-9]{1,18}$", error="Not a valid cursor."),
        metadata={"description": "The `next` value of the previous page."},
    )
    userId = fields.String(validate=validate.Length(min=1, max=USER_ID_MAX))
    eventType = fields.String(validate=validate.Length(min=1, max=EVENT_TYPE_MAX))
    since = Timestamp(metadata={"description": "Event timestamp >= since (ISO-8601)."})
    until = Timestamp(metadata={"description": "Event timestamp < until (ISO-8601)."})

    @validates_schema
    def _window(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "since" in data and "until" in data and data["since"] >= data["until"]:
            raise ValidationError("must be later than since", "until")


class EventPageSchema(Schema):
    events = fields.List(fields.Nested(StoredEventSchema), required=True)
    count = fields.Integer(required=True, metadata={"description": "Events in this page."})
    total = fields.Integer(required=True, metadata={"description": "Events stored in all."})
    next = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Cursor of the next page; null when there is none."},
    )


class StatsSchema(Schema):
    processed = fields.Integer(required=True)
    duplicatesSkipped = fields.Integer(required=True)
    deadLettered = fields.Integer(required=True)
    deadLetteredByReason = fields.Dict(keys=fields.String(), values=fields.Integer())
    stored = fields.Integer(required=True)
    byEventType = fields.Dict(keys=fields.String(), values=fields.Integer())


class ErrorBodySchema(Schema):
    type = fields.String(required=True)
    message = fields.String(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


class HealthSchema(Schema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String())

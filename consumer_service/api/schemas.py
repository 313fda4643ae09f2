"""The read API's query and response shapes, built on the shared event schemas so the
OpenAPI document and the validation come from one place."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate

from consumer_service.storage.timeindex import days_from_civil, days_in_month
from shared import web
from shared.event_rules import EVENT_TYPE_MAX, USER_ID_MAX, FullRegexp
from shared.events import SCHEMA_VERSION_2, StoredEventSchema

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
# How many of the newest stored events the dashboard lists.
RECENT_EVENTS = 20


# RFC 3339 `date-time` (what OpenAPI's `format: date-time` means) with the field ranges a
# regex can state: seconds are 00-59 (no leap second), the offset is `Z` or ±HH:MM, and
# the fraction has any number of digits. The day-of-month bound is checked in code. The
# same text is the `pattern` of the OpenAPI document, so the document and the check agree.
INSTANT_PATTERN = (
    r"^([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[Tt]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(?:\.([0-9]+))?"
    r"([Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_INSTANT = re.compile(INSTANT_PATTERN)
_MS_PER_DAY = 86_400_000


def _civil_from_days(days: int) -> tuple[int, int, int]:
    # The inverse of days_from_civil: the date of a day number, any year.
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + (3 if month_index < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


# The first and last millisecond a stored timestamp (4-digit year) can name.
EARLIEST_MS = days_from_civil(0, 1, 1) * _MS_PER_DAY
LATEST_MS = days_from_civil(9999, 12, 31) * _MS_PER_DAY + _MS_PER_DAY - 1


def parse_instant(text: str) -> int:
    """Milliseconds since 1970-01-01T00:00:00Z of an INSTANT_PATTERN instant, ROUNDED UP
    to the next millisecond when it has nonzero digits below the millisecond.

    Stored timestamps have whole milliseconds, so for an inclusive lower bound and an
    exclusive upper bound alike, rounding up gives exactly the same set of stored
    timestamps as the instant itself would, for any number of fraction digits. The result
    may lie outside years 0000-9999 (an offset moves it); see `format_instant`.
    Raises ValueError when `text` is not such an instant."""
    match = _INSTANT.fullmatch(text)
    if match is None:
        raise ValueError(text)
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "", match.group(8)
    if day > days_in_month(year, month):
        raise ValueError(text)
    millis = int(fraction[:3].ljust(3, "0"))
    if fraction[3:].strip("0"):
        millis += 1
    offset_minutes = 0
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        offset_minutes = sign * (int(zone[1:3]) * 60 + int(zone[4:6]))
    seconds = ((hour * 60 + minute - offset_minutes) * 60) + second
    return days_from_civil(year, month, day) * _MS_PER_DAY + seconds * 1000 + millis


def format_instant(ms: int) -> str:
    """`ms` (since 1970-01-01T00:00:00Z, within EARLIEST_MS..LATEST_MS) in the stored
    timestamp format, so it compares with stored timestamps as a string."""
    days, rest = divmod(ms, _MS_PER_DAY)
    year, month, day = _civil_from_days(days)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{year:04d}-{month:02d}-{day:02d}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


class DigitsInteger(fields.Integer):
    """An integer query parameter written as plain ASCII digits, as the document says:
    `int()` would also take " 5", "+5", "5_0" and other scripts' digits."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not (isinstance(value, str) and value.isascii() and value.isdigit()):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Instant(fields.Field[int]):
    """A query instant (INSTANT_PATTERN), loaded by `parse_instant`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return parse_instant(value)
        except ValueError:
            raise ValidationError(
                "Not a valid RFC 3339 date-time with a timezone, e.g. 2026-11-24T04:29:53.123Z "
                "or 2026-11-24T06:29:53+02:00."
            ) from None


def _instant_doc(bound: str) -> dict[str, Any]:
    return {
        "type": "string",
        "format": "date-time",
        "pattern": INSTANT_PATTERN,
        "example": "2026-11-24T04:29:53.123Z",
        "description": (
            f"{bound} RFC 3339 date-time with `Z` or an offset (`+02:00`), seconds "
            "required, any number of fraction digits; compared exactly with the event's "
            "millisecond timestamp (digits below the millisecond are not cut off). Any "
            "year 0000-9999, also where the offset moves the instant outside it. An "
            "empty value is a 400."
        ),
    }


class ProcessedQuerySchema(Schema):
    """Query of GET /events/processed. Unknown parameters are rejected, and so is an empty
    value of any parameter (`?until=`): none of them has a meaning for "".

    Loads to `limit`, and when given `cursor`, `userId`, `eventType`, and `since`/`until`
    as stored-format timestamps (only when they bound anything), plus `empty: True` when
    the time window can hold no stored event (`since` >= `until`, or entirely outside
    years 0000-9999)."""

    limit = DigitsInteger(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Events per page, 1 to {MAX_LIMIT}; {DEFAULT_LIMIT} if absent."},
    )
    cursor = fields.String(
        validate=FullRegexp(r"^[0-9]{1,18}$", error="Not a valid cursor."),
        metadata={
            "description": (
                "The `next` value of the previous page, passed back unchanged. Its form "
                "depends on the store behind this API: on a single Redis node, 1 to 18 "
                "digits; on a Redis Cluster, an opaque string starting `v1.` "
                "(`v1.` and base64url characters), meaningful only to that cluster. The "
                "`pattern` is the form of the store this document was built for; a cursor "
                "of the other form, or one the store did not make, is answered 400."
            )
        },
    )
    userId = fields.String(
        validate=validate.Length(min=1, max=USER_ID_MAX),
        metadata={
            "description": (
                "Only this user's events (exact match); an anonymous event (schema "
                "version 2, no userId) is this user's when its anonymousId matches."
            )
        },
    )
    eventType = fields.String(
        validate=validate.Length(min=1, max=EVENT_TYPE_MAX),
        metadata={"description": "Only events of this type (exact match)."},
    )
    schemaVersion = DigitsInteger(
        validate=validate.Range(min=1, max=SCHEMA_VERSION_2),
        metadata={"description": "Only events of this schema version (1 or 2)."},
    )
    since = Instant(metadata=_instant_doc("Events at or after this instant (inclusive)."))
    until = Instant(metadata=_instant_doc("Events before this instant (exclusive)."))

    @post_load
    def _window(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        since: int | None = data.pop("since", None)
        until: int | None = data.pop("until", None)
        if (
            (since is not None and since > LATEST_MS)
            or (until is not None and until <= EARLIEST_MS)
            or (since is not None and until is not None and since >= until)
        ):
            data["empty"] = True
        # A bound beyond every storable timestamp bounds nothing: leave it out.
        if since is not None and EARLIEST_MS < since <= LATEST_MS:
            data["since"] = format_instant(since)
        if until is not None and EARLIEST_MS < until <= LATEST_MS:
            data["until"] = format_instant(until)
        return data


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
    erasedDropped = fields.Integer(
        required=True,
        metadata={"description": "Records of erased users' events dropped, not stored"},
    )
    deadLettered = fields.Integer(required=True)
    deadLetteredByReason = fields.Dict(keys=fields.String(), values=fields.Integer())
    stored = fields.Integer(required=True)
    byEventType = fields.Dict(keys=fields.String(), values=fields.Integer())


class HealthSchema(web.HealthSchema):
    """/health, and /ready with what it checked (a 503 adds the shared `error`)."""

    checks = fields.Dict(keys=fields.String(), values=fields.String())


# -- the dashboard's figures -------------------------------------------------------------
# `attribute` names the field of the value a schema dumps (consumer_service.api.dashboard:
# its KafkaSnapshot and the Redis figures); the field's own name is the JSON key.


class ErasedSchema(Schema):
    """The answer of DELETE /users/{userId}/events."""

    userId = fields.String(required=True)
    deleted = fields.Integer(
        required=True,
        validate=validate.Range(min=0),
        metadata={"description": "Stored events of the user deleted by this call"},
    )
    erasedThrough = fields.String(
        required=True,
        metadata={
            "description": "The erasure's cutoff: no event of the user whose timestamp is "
            "at or before it is stored again"
        },
    )


class RecentEventSchema(Schema):
    eventId = fields.String(required=True)
    userId = fields.String(required=True)
    eventType = fields.String(required=True)
    timestamp = fields.String(required=True)
    processedAt = fields.String(required=True)
    partition = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class RedisFiguresSchema(Schema):
    error = fields.String(required=True, allow_none=True)
    usedMemory = fields.Integer(
        attribute="used_bytes",
        required=True,
        allow_none=True,
        metadata={"description": "INFO memory used_memory"},
    )
    maxMemory = fields.Integer(
        attribute="max_bytes",
        required=True,
        allow_none=True,
        metadata={"description": "0 when Redis has no limit"},
    )


class PartitionLagSchema(Schema):
    partition = fields.Integer(required=True)
    highWatermark = fields.Integer(attribute="high_watermark", required=True)
    committed = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: nothing committed yet"}
    )
    lag = fields.Integer(required=True)


class GroupMemberSchema(Schema):
    clientId = fields.String(attribute="client_id", required=True)
    host = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "null when asked without a credential"},
    )
    partitions = fields.List(fields.Integer(), required=True)


class KafkaFiguresSchema(Schema):
    sampledAt = fields.Float(
        attribute="sampled_at",
        required=True,
        metadata={"description": "Unix seconds when Kafka was asked"},
    )
    error = fields.String(required=True, allow_none=True)
    produced = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "Sum of the topic's high watermarks: records ever produced"},
    )
    groupState = fields.String(attribute="group_state", required=True, allow_none=True)
    partitions = fields.List(fields.Nested(PartitionLagSchema), required=True)
    members = fields.List(fields.Nested(GroupMemberSchema), required=True)


class DashboardDataSchema(Schema):
    generatedAt = fields.Float(required=True, metadata={"description": "Unix seconds"})
    topic = fields.String(required=True)
    group = fields.String(required=True)
    pollSeconds = fields.Float(required=True)
    stats = fields.Nested(StatsSchema, required=True, allow_none=True)
    redis = fields.Nested(RedisFiguresSchema, required=True)
    recent = fields.List(
        fields.Nested(RecentEventSchema),
        required=True,
        metadata={"description": f"The newest {RECENT_EVENTS} stored events, newest first"},
    )
    kafka = fields.Nested(KafkaFiguresSchema, required=True)

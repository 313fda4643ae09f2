"""The read API's query rules and the worker heartbeat verdicts, without Redis or Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import ValidationError

from consumer_service.api import build_spec
from consumer_service.api.schemas import ProcessedQuerySchema, format_instant, parse_instant
from consumer_service.pipeline.status import StatusFile, WorkerStatus
from consumer_service.storage import PageQuery
from shared.events import utc_timestamp


def load(**args: str) -> dict[str, Any]:
    result: dict[str, Any] = ProcessedQuerySchema().load(args)
    return result


def test_query_defaults_and_normalised_timestamps() -> None:
    assert load() == {"limit": 100}
    q = load(since="2026-11-24T06:00:00+02:00", until="2026-11-24T04:00:00.5Z")
    assert q["since"] == "2026-11-24T04:00:00.000Z"
    assert q["until"] == "2026-11-24T04:00:00.500Z"


@pytest.mark.parametrize(
    "args",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "1.5"},
        {"cursor": "x"},
        {"cursor": "-3"},
        {"since": "2026-11-24"},
        {"until": "soon"},
        {"eventType": "x" * 65},
        {"page": "2"},
        # An empty value means nothing for any parameter.
        {"limit": ""},
        {"cursor": ""},
        {"userId": ""},
        {"eventType": ""},
        {"since": ""},
        {"until": ""},
        # Only what the document allows: plain ASCII digits, nothing around them.
        {"cursor": "5\n"},
        {"cursor": "\u0665"},
        {"limit": " 5"},
        {"limit": "+5"},
        {"limit": "5_0"},
        {"limit": "\uff15"},
    ],
)
def test_invalid_queries(args: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ProcessedQuerySchema().load(args)


@pytest.mark.parametrize(
    ("given", "bound"),
    [
        ("2026-11-24T04:49:09.224Z", "2026-11-24T04:49:09.224Z"),
        ("2026-11-24T04:49:09.2240000000Z", "2026-11-24T04:49:09.224Z"),
        # Digits below the millisecond round UP: they were cut off, so .2249 matched .224.
        ("2026-11-24T04:49:09.2249Z", "2026-11-24T04:49:09.225Z"),
        ("2026-11-24T04:49:09.224000000000000000000001Z", "2026-11-24T04:49:09.225Z"),
        ("2026-12-31T23:59:59.9991Z", "2027-01-01T00:00:00.000Z"),
        ("2026-11-24T06:49:09.2241+02:00", "2026-11-24T04:49:09.225Z"),
        ("2026-11-24t04:49:09z", "2026-11-24T04:49:09.000Z"),
        ("2026-11-24T04:49:09-00:00", "2026-11-24T04:49:09.000Z"),
        # Four-digit years, also before 1000 (strftime wrote "999-..."), and year 0000.
        ("0999-05-01T00:00:00Z", "0999-05-01T00:00:00.000Z"),
        ("0001-01-01T00:30:00+01:00", "0000-12-31T23:30:00.000Z"),
        ("0000-02-29T12:00:00.5Z", "0000-02-29T12:00:00.500Z"),
    ],
)
def test_since_and_until_are_exact_to_the_stored_millisecond(given: str, bound: str) -> None:
    assert load(since=given)["since"] == bound
    assert load(until=given)["until"] == bound


def test_a_bound_below_a_millisecond_selects_exactly_the_events_it_names() -> None:
    event = {"userId": "u", "eventType": "LOGIN", "timestamp": "2026-11-24T04:49:09.224Z"}

    def selected(**args: str) -> bool:
        q = load(**args)
        return PageQuery(since=q.get("since"), until=q.get("until")).matches(event)

    assert not selected(since="2026-11-24T04:49:09.2249Z")  # .224 is before .2249
    assert selected(since="2026-11-24T04:49:09.2239Z")
    assert selected(until="2026-11-24T04:49:09.2241Z")  # .224 is before .2241
    assert not selected(until="2026-11-24T04:49:09.224Z")


def test_windows_beyond_the_storable_years_bound_nothing_or_hold_nothing() -> None:
    # Stored timestamps have years 0000-9999; an offset can move a bound outside them.
    assert load(since="0000-01-01T00:30:00+01:00") == {"limit": 100}  # no lower bound
    assert load(until="9999-12-31T23:59:59-01:00") == {"limit": 100}  # no upper bound
    assert load(until="0000-01-01T00:30:00+01:00")["empty"] is True
    assert load(since="9999-12-31T23:59:59-01:00")["empty"] is True
    # A window that cannot hold an event is an empty answer, not a bad query.
    assert load(since="2026-11-24T05:00:00Z", until="2026-11-24T04:00:00Z")["empty"] is True
    assert load(since="2026-11-24T04:00:00.0001Z", until="2026-11-24T04:00:00.0009Z")["empty"]
    assert "empty" not in load(since="2026-11-24T04:00:00Z", until="2026-11-24T04:00:00.0001Z")


@given(
    moment=st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(None)
    ),
    offset_minutes=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    extra=st.text(alphabet="0123456789", max_size=12),
)
def test_parsing_agrees_with_datetime_rounded_up_to_the_millisecond(
    moment: datetime, offset_minutes: int, extra: str
) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.replace(tzinfo=zone)
    text = local.isoformat(timespec="microseconds")
    text = text[:26] + extra + text[26:]  # more fraction digits after the microseconds
    exact = local.astimezone(UTC)
    floor = exact.replace(microsecond=exact.microsecond // 1000 * 1000)
    below = exact.microsecond % 1000 or extra.strip("0")
    expected = floor + timedelta(milliseconds=1) if below else floor
    ms = parse_instant(text)
    assert ms == round((expected - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))
    assert format_instant(ms) == utc_timestamp(expected)


SPEC_VALID = [
    "2026-11-24T04:49:09Z",
    "2026-11-24T04:49:09.2249Z",
    "2026-11-24T06:49:09.123456789123+02:00",
    "2026-11-24t04:49:09z",
    "2024-02-29T00:00:00-00:00",
    "0000-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999-23:59",
]
SPEC_INVALID = [
    "",
    "2026-11-24",
    "2026-11-24T04:49Z",  # RFC 3339 needs the seconds
    "2026-11-24T04:49:09",  # no timezone
    "2026-11-24 04:49:09Z",
    "2026-11-24T04:49:09+0200",
    "2026-11-24T04:49:60Z",  # a leap second: stored timestamps never name one
    "2026-11-24T04:49:09.Z",
    "2026-02-30T00:00:00Z",
    "2025-02-29T00:00:00Z",
    "20261124T044909Z",
    "2026-11-24T04:49:09Z\n",
    "\uff12026-11-24T04:49:09Z",  # a non-ASCII digit
]


def query_parameter_schemas() -> dict[str, Any]:
    spec = build_spec().to_dict()
    parameters = spec["paths"]["/events/processed"]["get"]["parameters"]
    return {p["name"]: p["schema"] for p in parameters if p["in"] == "query"}


@pytest.mark.parametrize("name", ["since", "until"])
def test_the_openapi_document_declares_exactly_the_instants_the_api_takes(name: str) -> None:
    schema = query_parameter_schemas()[name]
    assert schema["type"] == "string"
    assert schema["format"] == "date-time"
    check = jsonschema_rs.validator_for(schema, validate_formats=True)
    for value in SPEC_VALID:
        assert check.is_valid(value), value
        ProcessedQuerySchema().load({name: value})
    for value in SPEC_INVALID:
        assert not check.is_valid(value), value
        with pytest.raises(ValidationError):
            ProcessedQuerySchema().load({name: value})


def test_the_openapi_document_declares_an_empty_value_invalid_for_every_parameter() -> None:
    # A schema-driven fuzzer sent a spec-valid `until=` and got a 400.
    schemas = query_parameter_schemas()
    assert set(schemas) == set(ProcessedQuerySchema().fields)
    for name, schema in schemas.items():
        assert not jsonschema_rs.validator_for(schema).is_valid(""), name
        with pytest.raises(ValidationError):
            ProcessedQuerySchema().load({name: ""})


def test_filters_match_on_user_type_and_half_open_time_window() -> None:
    event = {"userId": "u", "eventType": "LOGIN", "timestamp": "2026-11-24T04:00:00.000Z"}
    assert PageQuery(user_id="u", event_type="LOGIN").matches(event)
    assert not PageQuery(user_id="v").matches(event)
    assert not PageQuery(event_type="LOGOUT").matches(event)
    assert PageQuery(since="2026-11-24T04:00:00.000Z").matches(event)
    assert not PageQuery(until="2026-11-24T04:00:00.000Z").matches(event)


def test_worker_status_verdicts(tmp_path: Path) -> None:
    now = 1000.0
    assert WorkerStatus("running", now - 5).problem(30, now) is None
    assert "heartbeat" in str(WorkerStatus("running", now - 60).problem(30, now))
    assert "backing_off" in str(WorkerStatus("backing_off", now, 0, "Redis down").problem(30, now))
    # Not ready until the group has given this member its first (possibly empty) assignment.
    assert "not joined" in str(WorkerStatus("joining", now).problem(30, now))
    assert WorkerStatus("running", now, 0).problem(30, now) is None
    file = StatusFile(tmp_path / "s.json")
    assert file.read() is None
    file.write(WorkerStatus("running", now, 6))
    assert file.read() == WorkerStatus("running", now, 6)

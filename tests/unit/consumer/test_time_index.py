"""The time index's scores and a page's time window, without Redis: scores must order
stored timestamps exactly as the read API's string comparison does, at the extremes
too, or a window listed from the index would differ from the window walked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer_service.api.schemas import ProcessedQuerySchema, parse_instant
from consumer_service.config import ConsumerSettings
from consumer_service.storage import PageQuery
from consumer_service.storage.base import MAX_PAGE_BYTES, MAX_SCAN
from consumer_service.storage.page_read import time_window
from consumer_service.storage.timeindex import time_score
from shared.event_rules import TIMESTAMP_PATTERN
from shared.events import utc_timestamp

EXTREMES = [
    "0000-01-01T00:00:00.000Z",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:00:00.000Z",
    "2024-02-29T12:00:00.000Z",
    "9999-01-01T00:00:00.000Z",
    "9999-12-31T23:59:59.999Z",
]

real_instants = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda d: utc_timestamp(d.replace(tzinfo=UTC)))
# Anything a raw writer of the topic can store: the pattern, with any digits.
stored_timestamps = st.from_regex(TIMESTAMP_PATTERN, fullmatch=True)


@pytest.mark.parametrize("instant", EXTREMES)
def test_a_real_instant_scores_its_milliseconds(instant: str) -> None:
    assert time_score(instant) == str(parse_instant(instant))


@given(real_instants)
def test_every_real_instant_scores_its_milliseconds(instant: str) -> None:
    assert time_score(instant) == str(parse_instant(instant))


@given(stored_timestamps, real_instants)
def test_scores_compare_with_a_real_bound_as_the_strings_do(stored: str, bound: str) -> None:
    score, limit = float(time_score(stored)), float(time_score(bound))
    assert (score >= limit) == (stored >= bound)
    assert (score < limit) == (stored < bound)


@pytest.mark.parametrize(
    ("odd", "after", "before"),
    [
        ("2026-11-20T00:61:00.000Z", "2026-11-20T00:59:59.999Z", "2026-11-20T01:00:00.000Z"),
        ("2026-02-29T00:00:00.000Z", "2026-02-28T23:59:59.999Z", "2026-03-01T00:00:00.000Z"),
        ("2026-13-01T00:00:00.000Z", "2026-12-31T23:59:59.999Z", "2027-01-01T00:00:00.000Z"),
        ("2026-00-05T00:00:00.000Z", "2025-12-31T23:59:59.999Z", "2026-01-01T00:00:00.000Z"),
        ("2026-05-00T00:00:00.000Z", "2026-04-30T23:59:59.999Z", "2026-05-01T00:00:00.000Z"),
        ("2026-05-01T24:00:00.000Z", "2026-05-01T23:59:59.999Z", "2026-05-02T00:00:00.000Z"),
        ("2026-05-01T10:00:60.000Z", "2026-05-01T10:00:59.999Z", "2026-05-01T10:01:00.000Z"),
        ("9999-99-99T99:99:99.999Z", "9999-12-31T23:59:59.999Z", None),
        ("0000-00-00T00:00:00.000Z", None, "0000-01-01T00:00:00.000Z"),
    ],
)
def test_a_timestamp_naming_no_instant_scores_between_its_neighbours(
    odd: str, after: str | None, before: str | None
) -> None:
    score = float(time_score(odd))
    assert after is None or float(time_score(after)) < score
    assert before is None or score < float(time_score(before))


@pytest.mark.parametrize(
    "bad", ["", "2026-11-20T00:00:00Z", "2026-11-20T00:00:00.000", "\uff12026-11-20T00:00:00.000Z"]
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        time_score(bad)


@pytest.mark.parametrize(
    ("args", "window"),
    [
        ({}, None),
        ({"userId": "u1", "eventType": "LOGIN"}, None),
        # The far ends the read API still passes on are windows like any other.
        ({"since": "9999-01-01T00:00:00Z"}, ("253370764800000", "+inf")),
        ({"until": "1970-01-01T00:00:00Z"}, ("-inf", "(0")),
        ({"since": "0000-01-01T00:00:00.001Z"}, ("-62167219199999", "+inf")),
        (
            {"since": "2026-11-24T04:29:53.123Z", "until": "2026-11-24T04:29:53.124Z"},
            ("1795494593123", "(1795494593124"),
        ),
    ],
)
def test_the_window_a_query_asks_the_time_index_for(
    args: dict[str, str], window: tuple[str, str] | None
) -> None:
    q = ProcessedQuerySchema().load(args)
    query = PageQuery(
        limit=q["limit"],
        user_id=q.get("userId"),
        event_type=q.get("eventType"),
        since=q.get("since"),
        until=q.get("until"),
    )
    assert time_window(query) == window


def test_the_read_api_defaults_are_the_stores() -> None:
    settings = ConsumerSettings()
    assert (settings.api.max_scan_per_page, settings.api.max_page_bytes) == (
        MAX_SCAN,
        MAX_PAGE_BYTES,
    )

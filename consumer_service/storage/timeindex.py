"""The score of an event in the time index (keys.py: `P:time`): its `timestamp` as
milliseconds since 1970-01-01T00:00:00Z, which a Redis score (a double) holds exactly,
halves included, for every 4-digit year.

A stored timestamp only has to match TIMESTAMP_PATTERN (`YYYY-MM-DDTHH:MM:SS.mmmZ`), so
a record written straight to Kafka can carry `2026-13-45T99:00:00.000Z`. The read API
compares timestamps as strings, and its bounds are always real instants (whole
milliseconds); such a timestamp scores half a millisecond before the first real instant
after it. A window [since, until) of real instants then selects by score exactly the
events it selects by string.
"""

from __future__ import annotations

import re
from functools import lru_cache

from shared.event_rules import TIMESTAMP_PATTERN

_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_MS_PER_DAY = 86_400_000


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a date of the proleptic Gregorian calendar, any year (the
    `datetime` module stops at year 1)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


# Batches share timestamps (the producer gives one to a whole batch): the worker asks
# for the same few again and again.
@lru_cache(maxsize=4096)
def time_score(timestamp: str) -> str:
    """The time index score of a stored `timestamp` (TIMESTAMP_PATTERN), as Redis takes
    it: milliseconds since the epoch, a whole number for a real instant. A timestamp
    that names no real instant scores half a millisecond before the first real instant
    after it in string order, so it lies strictly between the two real instants around
    it, as its string does. Raises ValueError when `timestamp` is not of that form."""
    if _TIMESTAMP.fullmatch(timestamp) is None:
        raise ValueError(timestamp)
    real = _real_instant(timestamp)
    if real is not None:
        return str(real)
    return repr(_next_instant(timestamp) - 0.5)


def _fields(timestamp: str) -> tuple[int, ...]:
    return tuple(int(timestamp[a:b]) for a, b in _FIELDS)


_FIELDS = ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19), (20, 23))


def _real_instant(timestamp: str) -> int | None:
    """The milliseconds of `timestamp` when it names a real instant, else None."""
    start = _day_start(timestamp[:10])
    hour, minute, second = int(timestamp[11:13]), int(timestamp[14:16]), int(timestamp[17:19])
    if start is None or hour > 23 or minute > 59 or second > 59:
        return None
    return start + ((hour * 60 + minute) * 60 + second) * 1000 + int(timestamp[20:23])


# The worker scores every event it stores; its events' days are few.
@lru_cache(maxsize=1024)
def _day_start(date: str) -> int | None:
    """The milliseconds of 00:00 of `date` (YYYY-MM-DD), or None when it is no real date."""
    year, month, day = int(date[0:4]), int(date[5:7]), int(date[8:10])
    if not (1 <= month <= 12 and 1 <= day <= days_in_month(year, month)):
        return None
    return days_from_civil(year, month, day) * _MS_PER_DAY


def _next_instant(timestamp: str) -> int:
    """The milliseconds of the first real instant after `timestamp` in string order,
    for a timestamp naming none: the first field out of range decides, and everything
    after it is passed over."""
    year, month, day, hour, minute = _fields(timestamp)[:5]
    if month > 12:
        return days_from_civil(year + 1, 1, 1) * _MS_PER_DAY
    if month == 0:
        return days_from_civil(year, 1, 1) * _MS_PER_DAY
    if day > days_in_month(year, month):
        return (days_from_civil(year, month, 1) + days_in_month(year, month)) * _MS_PER_DAY
    if day == 0:
        return days_from_civil(year, month, 1) * _MS_PER_DAY
    start = days_from_civil(year, month, day) * _MS_PER_DAY
    if hour > 23:
        return start + _MS_PER_DAY
    if minute > 59:
        return start + (hour + 1) * 3_600_000
    return start + hour * 3_600_000 + (minute + 1) * 60_000

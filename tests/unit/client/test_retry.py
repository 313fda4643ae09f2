"""Backoff and Retry-After, without a network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from activity_client.retry import RETRY_AFTER_CAP, Backoff, parse_retry_after


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=10.0)
    ceilings = [backoff.delay(n, rand=lambda: 1.0) for n in range(12)]
    assert ceilings[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert ceilings[-1] == 10.0
    assert backoff.delay(10_000, rand=lambda: 1.0) == 10.0  # no overflow on long outages


def test_backoff_is_fully_jittered() -> None:
    backoff = Backoff(base=0.1, cap=10.0)
    assert backoff.delay(3, rand=lambda: 0.0) == 0.0
    assert backoff.delay(3, rand=lambda: 0.5) == 0.4
    delays = {Backoff().delay(6) for _ in range(50)}
    assert len(delays) > 40 and all(0 <= d <= 6.4 for d in delays)


def test_retry_after_is_a_floor_with_a_little_jitter() -> None:
    backoff = Backoff(base=0.1, cap=10.0)
    assert backoff.delay(0, retry_after=3.0, rand=lambda: 0.0) == 3.0
    assert backoff.delay(0, retry_after=3.0, rand=lambda: 1.0) == pytest.approx(3.3)
    # A long backoff beats a short Retry-After.
    assert backoff.delay(8, retry_after=1.0, rand=lambda: 1.0) == 10.0


def test_parse_retry_after() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    for hostile in ("99999999999", format_datetime(now + timedelta(days=400), usegmt=True)):
        assert parse_retry_after(hostile, now) == RETRY_AFTER_CAP
    for garbage in ("", "-5", "1.5", "soon", "٣", "\x00"):
        assert parse_retry_after(garbage, now) is None

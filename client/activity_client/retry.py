"""When to try a request again: jittered exponential backoff that honours `Retry-After`."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# A server's Retry-After is obeyed up to this many seconds: a hostile or broken value
# ("86400", a date next year) must not park the sender for a day.
RETRY_AFTER_CAP = 300.0


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff: attempt n (0-based) waits a uniform random time
    in [0, min(cap, base * 2**n)], and never less than the server's `Retry-After`.

    Full jitter spreads the retries of many clients that failed at the same moment (a
    producer restart) instead of bringing them back in step."""

    base: float = 0.1
    cap: float = 10.0

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number `attempt` + 1."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 62))
        jittered = ceiling * rand()
        if retry_after is None:
            return jittered
        # At least what the server asked, plus up to 10 % so that clients told the same
        # second do not all return in it.
        return max(jittered, retry_after * (1 + 0.1 * rand()))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), capped at
    `RETRY_AFTER_CAP`; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)

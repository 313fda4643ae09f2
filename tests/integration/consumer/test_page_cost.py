"""What one page of the single-node store costs Redis, counted on the wire: round trips
and commands per page, whatever the store holds. Counts, not clocks: a count does not
depend on how busy the machine is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import PageQuery, RedisEventStore

from .conftest import make_record

NOW = "2026-11-24T05:00:00.000Z"
STORED = 5000


class CountingConnection(redis.Connection):
    """A connection that counts what goes over it: one round trip per packet sent (a
    pipeline is one), one command per reply read."""

    round_trips = 0
    commands = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        CountingConnection.commands += 1
        return super().read_response(*args, **kwargs)


class Counted:
    """The store under test, on counting connections."""

    def __init__(self, url: str, settings: ConsumerSettings) -> None:
        pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
        self.client = redis.Redis(connection_pool=pool)
        self.store = RedisEventStore(self.client, settings.redis_prefix, settings.dedup_ttl_seconds)

    def cost(self, query: PageQuery, **limits: int) -> tuple[int, int, int, str | int | None]:
        """(round trips, commands, events) of one page, and its next cursor."""
        self.client.ping()  # the connection exists before counting starts
        CountingConnection.round_trips = CountingConnection.commands = 0
        page = self.store.page(query, **limits)
        return (
            CountingConnection.round_trips,
            CountingConnection.commands,
            len(page.events),
            page.next_cursor,
        )


@pytest.fixture
def counted(redis_url: str, settings: ConsumerSettings) -> Iterator[Counted]:
    counted = Counted(redis_url, settings)
    events = [
        Accepted(
            make_record(f"u{i % 50}", "LOGIN" if i % 2 else "VIEW", timestamp=_minute(i)), 0, i
        )
        for i in range(STORED)
    ]
    for first in range(0, STORED, 1000):
        counted.store.store_batch(events[first : first + 1000], NOW)
    yield counted
    counted.client.close()


def _minute(i: int) -> str:
    """Event i's timestamp: one a minute from 2026-11-20T00:00Z, in stored order."""
    day, minute = divmod(i, 24 * 60)
    return f"2026-11-{20 + day:02d}T{minute // 60:02d}:{minute % 60:02d}:00.000Z"


def test_a_window_after_every_event_costs_a_constant_few_commands(counted: Counted) -> None:
    # The costly query as a client sends it: nothing can match, and nothing is read.
    trips, commands, count, cursor = counted.cost(
        PageQuery(limit=1, since="9999-01-01T00:00:00.000Z")
    )
    assert (count, cursor) == (0, None)
    assert trips <= 3
    assert commands <= 6


def test_a_window_before_every_event_costs_a_constant_few_commands(counted: Counted) -> None:
    trips, commands, count, cursor = counted.cost(
        PageQuery(limit=1000, until="2000-01-01T00:00:00.000Z")
    )
    assert (count, cursor) == (0, None)
    assert (trips, commands) <= (3, 6)


def test_a_narrow_window_reads_only_the_events_it_returns(counted: Counted) -> None:
    # Ten events in the window, at its end in stored order: the window is listed from
    # the time index, not found by walking 4,990 others.
    since, until = _minute(STORED - 10), "2026-12-31T00:00:00.000Z"
    trips, commands, count, cursor = counted.cost(PageQuery(limit=1000, since=since, until=until))
    assert (count, cursor) == (10, None)
    assert trips <= 5
    assert commands <= 10


def test_limit_one_reads_one_body(counted: Counted) -> None:
    trips, commands, count, cursor = counted.cost(PageQuery(limit=1))
    assert count == 1 and cursor is not None
    assert (trips, commands) <= (5, 5)


def test_a_sparse_filter_stops_at_the_scan_budget_and_hands_on_a_cursor(
    counted: Counted,
) -> None:
    # user u0's LOGIN events: none (u0 has only even i, which are VIEW). The walk of u0's
    # 100 entries checks their type without reading a body, and the page ends.
    trips, _, count, cursor = counted.cost(PageQuery(limit=10, user_id="u0", event_type="LOGIN"))
    assert (count, cursor) == (0, None)
    assert trips <= 5
    # A budget smaller than the walk: the page stops, and its cursor goes on from where
    # the walk stopped.
    trips, _, count, cursor = counted.cost(
        PageQuery(limit=10, user_id="u0", event_type="LOGIN"), max_scan=30
    )
    assert count == 0 and cursor is not None
    assert trips <= 5
    again = counted.store.page(
        PageQuery(limit=10, user_id="u0", event_type="LOGIN", cursor=cursor), max_scan=1000
    )
    assert (again.events, again.next_cursor) == ([], None)

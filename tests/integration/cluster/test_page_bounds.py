"""What bounds a page, on one Redis and on a Redis Cluster: time windows listed from the
time index select exactly what comparing timestamps selects, pages end at the scan and
byte budgets and go on from their cursor, the time index stays in step with the index
through retention, and events stored without a time entry are still found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import EventStore, PageQuery
from consumer_service.storage.keys import ClusterKeyLayout, KeyLayout
from consumer_service.storage.time_backfill import Repaired, backfill
from tests.integration.consumer.conftest import make_record

from .test_store_contract import NOW, StoreFactory

PARTITIONS = 4

# Timestamps a raw writer of the topic can store (they match the stored pattern), each
# just past a real instant a window may start or end at.
ODD_TIMESTAMPS = [
    "2026-11-20T00:61:00.000Z",  # after 00:59:59.999, before 01:00
    "2026-02-30T00:00:00.000Z",  # after Feb 28, before Mar 1
    "2026-13-01T00:00:00.000Z",  # after every 2026 instant, before 2027
    "2026-11-00T12:00:00.000Z",  # after Oct 31, before Nov 1
]


def minute(i: int) -> str:
    """Event i's timestamp: one a minute from 2026-11-20T00:00Z."""
    day, rest = divmod(i, 24 * 60)
    return f"2026-11-{20 + day:02d}T{rest // 60:02d}:{rest % 60:02d}:00.000Z"


def events(n: int, payload: dict[str, Any] | None = None, offset0: int = 0) -> list[Accepted]:
    """`n` events a minute apart, then the odd timestamps; user u<k> on partition k."""
    stamps = [minute(i) for i in range(n)] + ODD_TIMESTAMPS
    return [
        Accepted(
            make_record(
                f"u{i % PARTITIONS}",
                ["LOGIN", "LOGOUT", "VIEW"][i % 3],
                timestamp=stamp,
                payload=payload or {},
            ),
            i % PARTITIONS,
            offset0 + i,
        )
        for i, stamp in enumerate(stamps)
    ]


def read_all(
    store: EventStore, query: PageQuery, **bounds: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """Every event the query pages through, and the size of each page."""
    found: list[dict[str, Any]] = []
    sizes: list[int] = []
    cursor: int | str = 0
    for _ in range(1000):
        page = store.page(PageQuery(**{**query.__dict__, "cursor": cursor}), **bounds)
        found += page.events
        sizes.append(len(page.events))
        if page.next_cursor is None:
            return found, sizes
        cursor = page.next_cursor
    raise AssertionError("paging did not end")


def expected(batch: list[Accepted], query: PageQuery) -> list[str]:
    """The ids the query selects, comparing timestamps as strings, in storing order."""
    return [a.event_id for a in batch if query.matches(a.record)]


class Raw:
    """Direct access to the store's keys: the layouts of its partitions (one on a single
    node) and a client."""

    def __init__(self, backend: str, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.client: Any
        if backend == "cluster":
            self.client = redis.RedisCluster.from_url(url)
            keys = ClusterKeyLayout(prefix)
            self.layouts = [keys.partition(p) for p in range(PARTITIONS)]
        else:
            self.client = redis.Redis.from_url(url)
            self.layouts = [KeyLayout(prefix)]

    def sizes(self) -> list[tuple[int, int]]:
        """(index entries, time index entries) per layout."""
        return [(self.client.zcard(k.index), self.client.zcard(k.time)) for k in self.layouts]


@pytest.fixture
def raw(backend: str, request: pytest.FixtureRequest, unique: str) -> Iterator[Raw]:
    fixture = "redis_cluster" if backend == "cluster" else "redis_url"
    value = request.getfixturevalue(fixture)
    access = Raw(backend, value.url if backend == "cluster" else value, f"test:{unique}")
    yield access
    access.client.close()


WINDOWS = [
    PageQuery(),
    PageQuery(since="9999-01-01T00:00:00.000Z"),
    PageQuery(until="2000-01-01T00:00:00.000Z"),
    PageQuery(since=minute(50), until=minute(53)),
    PageQuery(since=minute(59), until="2026-11-20T01:00:00.000Z"),
    PageQuery(since="2026-12-01T00:00:00.000Z", until="2027-01-01T00:00:00.000Z"),
    PageQuery(since="2026-02-28T23:59:59.999Z", until="2026-03-01T00:00:00.000Z"),
    PageQuery(since="2026-10-31T23:59:59.999Z", until="2026-11-01T00:00:00.000Z"),
    PageQuery(since=minute(10), user_id="u1"),
    PageQuery(until=minute(40), event_type="VIEW"),
    PageQuery(since=minute(5), until=minute(70), user_id="u2", event_type="LOGIN"),
    PageQuery(user_id="u3", event_type="VIEW"),
]


@pytest.mark.parametrize("query", WINDOWS, ids=[str(i) for i in range(len(WINDOWS))])
@pytest.mark.parametrize("limit", [1, 7, 1000])
def test_windows_select_what_comparing_timestamps_selects(
    make_any_store: StoreFactory, raw: Raw, query: PageQuery, limit: int
) -> None:
    store = make_any_store()
    batch = events(80)
    store.store_batch(batch[:40], NOW)
    store.store_batch(batch[40:], NOW)
    want = expected(batch, query)
    got, sizes = read_all(store, PageQuery(**{**query.__dict__, "limit": limit}))
    ids = [e["eventId"] for e in got]
    assert sorted(ids) == sorted(want) and len(ids) == len(set(ids))
    assert all(size <= limit for size in sizes)
    if len(raw.layouts) == 1:
        assert ids == want  # one node: exact processing order
    # Without a time index (as stored by an older release), the same events.
    for layout in raw.layouts:
        raw.client.delete(layout.time)
    legacy, _ = read_all(store, PageQuery(**{**query.__dict__, "limit": limit}))
    assert sorted(e["eventId"] for e in legacy) == sorted(want)


def test_a_window_outside_every_event_is_an_empty_last_page(make_any_store: StoreFactory) -> None:
    store = make_any_store()
    store.store_batch(events(200), NOW)
    for query in (
        PageQuery(limit=1, since="9999-01-01T00:00:00.000Z"),
        PageQuery(limit=1000, until="0000-01-01T00:00:00.001Z"),
        PageQuery(limit=1, since="2030-01-01T00:00:00.000Z", user_id="u1", event_type="VIEW"),
    ):
        page = store.page(query)
        assert (page.events, page.next_cursor, page.total) == ([], None, 204)


def test_huge_events_end_a_page_at_the_byte_budget(make_any_store: StoreFactory) -> None:
    store = make_any_store()
    batch = events(12, payload={"blob": "x" * 300_000})[:12]
    store.store_batch(batch, NOW)
    first = store.page(PageQuery(limit=1000), max_bytes=1024 * 1024)
    # 3 events come to less than a MiB; the 4th reaches it and ends the page.
    assert len(first.events) == 4 and first.next_cursor is not None
    got, sizes = read_all(store, PageQuery(limit=1000), max_bytes=1024 * 1024)
    assert sorted(e["eventId"] for e in got) == sorted(a.event_id for a in batch)
    assert max(sizes) == 4
    # An event larger than the budget still makes a page of its own.
    got, sizes = read_all(store, PageQuery(limit=1000, user_id="u1"), max_bytes=1024)
    assert len(got) == 3 and max(sizes) == 1


def test_a_sparse_filter_pages_on_under_a_small_scan_budget(make_any_store: StoreFactory) -> None:
    store = make_any_store()
    batch = events(300)
    store.store_batch(batch, NOW)
    # u1's LOGIN events are every 12th; a window of a few of them near the end.
    for query in (
        PageQuery(limit=5, user_id="u1", event_type="LOGIN"),
        PageQuery(limit=5, since=minute(280), until=minute(290)),
        PageQuery(limit=5, since=minute(200), event_type="VIEW"),
    ):
        got, sizes = read_all(store, query, max_scan=7)
        assert sorted(e["eventId"] for e in got) == sorted(expected(batch, query))
        assert len(sizes) > 1  # the budget ended pages early, and their cursors went on


def test_retention_keeps_the_time_index_in_step(make_any_store: StoreFactory, raw: Raw) -> None:
    counted = make_any_store(retention_max_events=10)
    counted.store_batch(events(60), NOW)
    counted.store_batch(events(60, offset0=1000), NOW)
    assert all(entries == times <= 10 for entries, times in raw.sizes())
    window = PageQuery(limit=1000, until="9999-01-01T00:00:00.000Z")
    assert len(counted.page(window).events) == sum(n for n, _ in raw.sizes())


def test_age_retention_and_stale_reads_keep_the_time_index_in_step(
    make_any_store: StoreFactory, raw: Raw
) -> None:
    store = make_any_store(retention_max_age_seconds=1)
    store.store_batch(events(20), NOW)
    time.sleep(1.5)
    # The next batch prunes what expired; a read of the whole index drops what it meets.
    store.store_batch(events(8, offset0=1000)[:8], NOW)
    page = store.page(PageQuery(limit=1000, since=minute(0)))
    assert len(page.events) == 8
    store.page(PageQuery(limit=1000))
    assert all(entries == times for entries, times in raw.sizes())
    assert sum(n for n, _ in raw.sizes()) == 8


def test_the_backfill_brings_an_older_store_in_step(
    make_any_store: StoreFactory, raw: Raw, backend: str, request: pytest.FixtureRequest
) -> None:
    store = make_any_store()
    batch = events(60)
    store.store_batch(batch, NOW)
    # As an older release left it: no time entries; plus one whose event is gone.
    for layout in raw.layouts:
        raw.client.delete(layout.time)
        raw.client.zadd(layout.time, {"gone": 1.0})
    assert all(entries != times for entries, times in raw.sizes())
    url = request.getfixturevalue("redis_cluster").url if backend == "cluster" else None
    env = {
        "REDIS_URL": url or request.getfixturevalue("redis_url"),
        "CONSUMER_REDIS_PREFIX": raw.prefix,
        "CONSUMER_REDIS_MODE": backend,
    }
    done = subprocess.run(
        [sys.executable, "-m", "consumer_service.storage.time_backfill"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"entered": 64, "removed": len(raw.layouts)}
    assert all(entries == times for entries, times in raw.sizes())
    window = PageQuery(limit=1000, since=minute(10), until=minute(20))
    assert sorted(e["eventId"] for e in store.page(window).events) == sorted(
        expected(batch, window)
    )
    assert backfill(store) == Repaired(0, 0)  # again: nothing left to do


def test_a_window_listed_in_one_partition_leaves_the_others_their_turn(
    make_any_store: StoreFactory,
) -> None:
    # Each partition holds 5 events of the window, as many as the scan budget: listing
    # one partition's window must not starve the others page after page.
    store = make_any_store()
    batch = events(40)
    store.store_batch(batch, NOW)
    query = PageQuery(limit=100, since=minute(0), until=minute(20))
    got, _ = read_all(store, query, max_scan=5)
    assert sorted(e["eventId"] for e in got) == sorted(expected(batch, query))


def test_entries_a_reader_finds_stale_leave_both_indexes(
    make_any_store: StoreFactory, raw: Raw
) -> None:
    store = make_any_store()
    batch = events(20)
    store.store_batch(batch, NOW)
    # Bodies gone as retention would leave them: their index entries still there.
    for accepted in batch[:6]:
        for layout in raw.layouts:
            raw.client.delete(layout.event(accepted.event_id))
    got, _ = read_all(store, PageQuery(limit=3))
    assert sorted(e["eventId"] for e in got) == sorted(a.event_id for a in batch[6:])
    assert all(entries == times for entries, times in raw.sizes())
    assert sum(n for n, _ in raw.sizes()) == len(batch) - 6

"""The EventStore contract, run against one Redis and against a Redis Cluster: dedup vs
redelivery, batches spanning partitions, get, stats, and paging that neither skips nor
repeats an event while others are stored between pages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import EventStore, PageQuery, RedisClusterEventStore
from consumer_service.storage.cluster_page import decode_cursor, encode_cursor
from shared.errors import Unavailable
from tests.clusterharness import LocalRedisCluster, Node
from tests.integration.consumer.conftest import make_record

NOW = "2026-11-24T05:00:00.000Z"
LATER = "2026-11-24T05:00:01.000Z"

StoreFactory = Callable[..., EventStore]


def spread(n: int, partitions: int = 6, first_offset: int = 0) -> list[Accepted]:
    """`n` events over `partitions` partitions; user u<k> always on partition k % partitions,
    as a keyed producer would place them."""
    out = []
    for i in range(n):
        p = i % partitions
        out.append(Accepted(make_record(f"u{p}", ["LOGIN", "LOGOUT"][i % 2]), p, first_offset + i))
    return out


def test_redelivery_is_not_a_duplicate_but_another_copy_is(make_any_store: StoreFactory) -> None:
    store = make_any_store()
    batch = spread(12)
    first = store.store_batch(batch, NOW)
    assert len(first.stored) == 12
    again = store.store_batch(batch, NOW)
    assert (len(again.stored), len(again.duplicates), len(again.redelivered)) == (0, 0, 12)
    # The same eventId from another record, on the same and on another partition.
    same = Accepted(batch[0].record, batch[0].partition, 999)
    other = Accepted(batch[0].record, batch[0].partition + 1, 999)
    dup = store.store_batch([same, other], NOW)
    assert len(dup.duplicates) == 2 and not dup.stored
    stats = store.stats()
    assert (stats["processed"], stats["duplicatesSkipped"], stats["stored"]) == (12, 2, 12)
    assert stats["byEventType"] == {"LOGIN": 6, "LOGOUT": 6}
    stored = store.get(batch[0].event_id)
    assert stored is not None and stored["offset"] == batch[0].offset
    assert store.get("00000000-0000-0000-0000-000000000000") is None


def test_copies_inside_one_batch_store_the_first(make_any_store: StoreFactory) -> None:
    store = make_any_store()
    a = spread(1)[0]
    copy = Accepted(a.record, 3, 50)
    result = store.store_batch([a, copy], NOW)
    assert result.stored == (a,) and result.duplicates == (copy,)
    got = store.get(a.event_id)
    assert got is not None and (got["partition"], got["offset"]) == (a.partition, a.offset)


def test_dead_letters_are_counted_by_reason(make_any_store: StoreFactory) -> None:
    store = make_any_store()
    store.store_batch(spread(2), NOW, {"not_json": 2, "invalid_schema": 1})
    store.store_batch([], NOW, {"not_json": 1})
    stats = store.stats()
    assert stats["deadLettered"] == 4
    assert stats["deadLetteredByReason"] == {"invalid_schema": 1, "not_json": 3}


def read_all(store: EventStore, query: PageQuery) -> list[str]:
    ids: list[str] = []
    cursor: int | str = 0
    while True:
        page = store.page(PageQuery(**{**query.__dict__, "cursor": cursor}))
        ids += [e["eventId"] for e in page.events]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def test_paging_returns_every_event_once_with_filters(make_any_store: StoreFactory) -> None:
    store = make_any_store()
    batch = spread(60)
    store.store_batch(batch[:30], NOW)
    store.store_batch(batch[30:], LATER)
    everything = read_all(store, PageQuery(limit=7))
    assert sorted(everything) == sorted(a.event_id for a in batch)
    assert len(everything) == len(set(everything))
    # Earlier processing comes first.
    assert set(everything[:30]) == {a.event_id for a in batch[:30]}
    for user in ("u0", "u5"):
        mine = [a.event_id for a in batch if a.record["userId"] == user]
        assert read_all(store, PageQuery(limit=3, user_id=user)) == mine  # exact order
    logins = {a.event_id for a in batch if a.record["eventType"] == "LOGIN"}
    assert set(read_all(store, PageQuery(limit=4, event_type="LOGIN"))) == logins
    page = store.page(PageQuery(limit=100))
    assert page.total == 60 and page.next_cursor is None


def test_events_stored_between_pages_are_neither_skipped_nor_repeated(
    make_any_store: StoreFactory,
) -> None:
    store = make_any_store()
    seen: list[str] = []
    stored: list[str] = []
    cursor: int | str = 0
    offset = 0
    for round_ in range(8):
        # Each round stores into a few partitions, some new, some known, while a reader
        # is part-way through.
        batch = [
            Accepted(make_record(f"u{p}"), p, offset + k)
            for k, p in enumerate([round_ % 6, (round_ * 5) % 6, 6 + round_ % 2])
        ]
        offset += 10
        store.store_batch(batch, NOW if round_ % 2 else LATER)
        stored += [a.event_id for a in batch]
        page = store.page(PageQuery(limit=2, cursor=cursor))
        seen += [e["eventId"] for e in page.events]
        if page.next_cursor is not None:
            cursor = page.next_cursor
    while True:
        page = store.page(PageQuery(limit=2, cursor=cursor))
        seen += [e["eventId"] for e in page.events]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(stored)
    assert len(seen) == len(set(seen))


def test_a_page_filtered_to_nothing_ends_with_no_cursor(make_any_store: StoreFactory) -> None:
    store = make_any_store()
    store.store_batch(spread(10), NOW)
    page = store.page(PageQuery(limit=5, user_id="nobody"))
    assert page.events == [] and page.next_cursor is None


def test_ping(make_any_store: StoreFactory) -> None:
    assert make_any_store().ping() is True


@pytest.mark.parametrize(
    "positions", [{}, {0: 5}, {3: 1, 11: 123456789012, 2: 7}], ids=["empty", "one", "three"]
)
def test_cluster_cursors_round_trip(positions: dict[int, int]) -> None:
    assert decode_cursor(encode_cursor(positions)) == positions


@pytest.mark.parametrize("bad", ["", "5", "v1.", "v1.@@", "v1.MDo1LA", "v2.MDo1", "v1.MDowMQ"])
def test_cluster_cursors_other_than_ours_are_refused(bad: str) -> None:
    if bad == "v1.":
        assert decode_cursor(bad) == {}
        return
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(bad)


def masters(cluster: LocalRedisCluster) -> list[Node]:
    return [n for n in cluster.nodes if n.proc is not None and n.role() == "master"]


@contextmanager
def writes_paused(nodes: list[Node], ms: int) -> Iterator[None]:
    """CLIENT PAUSE WRITE on `nodes`: their clients' writes wait (visible in CLIENT LIST
    with flag b) until the pause ends or is lifted on leaving the block."""
    clients = [n.client() for n in nodes]
    try:
        for c in clients:
            c.execute_command("CLIENT", "PAUSE", ms, "WRITE")
        yield
    finally:
        for c in clients:
            c.execute_command("CLIENT", "UNPAUSE")
            c.close()


def blocked_writers(node: Node) -> int:
    client = node.client()
    try:
        return sum(1 for c in client.client_list() if "b" in c["flags"])
    finally:
        client.close()


def test_cluster_store_sends_each_step_to_every_node_at_once(
    redis_cluster: LocalRedisCluster, unique: str
) -> None:
    # Every master waits (fsync) before it answers; a step's pipelines must be in flight
    # on all of them together, not one node after another.
    store = RedisClusterEventStore(redis_cluster.url, f"test:{unique}", 3600)
    batch = spread(60)
    nodes = masters(redis_cluster)
    assert len(nodes) == 3
    store.ping()
    done: list[object] = []
    try:
        with writes_paused(nodes, 5000):
            worker = threading.Thread(
                target=lambda: done.append(store.store_batch(batch, NOW)), daemon=True
            )
            worker.start()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                waiting = [blocked_writers(n) for n in nodes]
                if all(waiting):
                    break
                time.sleep(0.05)
            assert all(waiting), f"writes waiting per master: {waiting}"
        worker.join(10)
        assert len(done) == 1 and len(done[0].stored) == 60  # type: ignore[attr-defined]
    finally:
        store.close()


def test_cluster_batch_failing_on_one_node_is_retried_whole(
    redis_cluster: LocalRedisCluster, unique: str
) -> None:
    store = RedisClusterEventStore(redis_cluster.url, f"test:{unique}", 3600, timeout_seconds=0.5)
    batch = spread(60)
    try:
        with writes_paused(masters(redis_cluster)[:1], 3000), pytest.raises(Unavailable):
            store.store_batch(batch, NOW)
        # The other nodes wrote their part; the retry completes it, with nothing counted
        # twice and nothing taken for a duplicate.
        again = store.store_batch(batch, NOW)
        assert not again.duplicates
        assert len(again.stored) + len(again.redelivered) == 60
        stats = store.stats()
        assert (stats["processed"], stats["duplicatesSkipped"], stats["stored"]) == (60, 0, 60)
    finally:
        store.close()

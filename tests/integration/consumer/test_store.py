"""RedisEventStore's contract on a real Redis: dedup vs redelivery, atomic batches,
and both retention bounds."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from consumer_service.config import ConsumerSettings
from consumer_service.processing import Accepted
from consumer_service.store import PageQuery, RedisEventStore

from .conftest import make_record, with_

NOW = "2026-11-24T05:00:00.000Z"


def accepted(n: int, user: str = "u", offset0: int = 0) -> list[Accepted]:
    return [Accepted(make_record(user), 0, offset0 + i) for i in range(n)]


def test_redelivery_is_not_a_duplicate_but_another_copy_is(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]
) -> None:
    store = make_store(settings)
    batch = accepted(3)
    first = store.store_batch(batch, NOW)
    assert len(first.stored) == 3
    again = store.store_batch(batch, NOW)  # the same records, e.g. replayed after a crash
    assert (len(again.stored), len(again.duplicates), len(again.redelivered)) == (0, 0, 3)
    copy = Accepted(batch[0].record, 1, 99)  # same eventId, another record
    dup = store.store_batch([copy, copy], NOW)
    assert len(dup.duplicates) == 2
    stats = store.stats()
    assert (stats["processed"], stats["duplicatesSkipped"], stats["stored"]) == (3, 2, 3)
    stored = store.get(batch[0].event_id)
    assert stored is not None and stored["offset"] == 0


def test_count_retention_deletes_the_oldest_with_their_index_entries(
    settings: ConsumerSettings,
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
) -> None:
    store = make_store(with_(settings, retention_max_events=10))
    batch = accepted(15, "ann") + accepted(10, "bob", 100)
    store.store_batch(batch[:12], NOW)
    store.store_batch(batch[12:], NOW)
    p = settings.redis_prefix
    kept = [a.event_id for a in batch[-10:]]
    assert [e["eventId"] for e in store.page(PageQuery(limit=100)).events] == kept
    assert store.get(batch[0].event_id) is None
    assert redis_client.zcard(f"{p}:user:ann") == 0
    assert redis_client.zcard(f"{p}:type:LOGIN") == 10
    assert store.stats()["processed"] == 25  # counters count everything ever processed
    # A trimmed event is still recognised as seen.
    assert len(store.store_batch([batch[0]], NOW).redelivered) == 1


def test_age_retention_expires_events_and_reads_skip_them(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]
) -> None:
    store = make_store(with_(settings, retention_max_events=0, retention_max_age_seconds=1))
    old = accepted(5, "ann")
    store.store_batch(old, NOW)
    time.sleep(1.2)
    new = accepted(3, "ann", 10)
    store.store_batch(new, NOW)
    page = store.page(PageQuery(user_id="ann"))
    assert [e["eventId"] for e in page.events] == [a.event_id for a in new]
    assert page.next_cursor is None
    assert store.stats()["stored"] == 3  # the script pruned the expired front of the index

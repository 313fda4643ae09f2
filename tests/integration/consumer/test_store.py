"""RedisEventStore's contract on a real Redis: dedup vs redelivery, atomic batches,
and both retention bounds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import redis

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import Chain, PageQuery, RedisEventStore, StoreFenced
from consumer_service.storage.script import EVICT_BASE, EVICT_PER_STORED

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


def test_a_chained_batch_writes_nothing_until_the_one_before_is_stored(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]
) -> None:
    store = make_store(settings)
    first, second = accepted(2, "u", 0), accepted(2, "u", 2)
    with pytest.raises(StoreFenced):
        store.store_batch(second, NOW, {"not_json": 1}, Chain("w", 2, after=1))
    assert store.stats()["processed"] == store.stats()["deadLettered"] == 0
    assert store.get(second[0].event_id) is None
    assert len(store.store_batch(first, NOW, chain=Chain("w", 1)).stored) == 2
    assert len(store.store_batch(second, NOW, {"not_json": 1}, Chain("w", 2, 1)).stored) == 2
    # Processing order is the order of the chain, whatever order the calls came in.
    page = store.page(PageQuery(limit=10))
    assert [e["offset"] for e in page.events] == [0, 1, 2, 3]
    assert store.stats()["deadLettered"] == 1


def test_a_writers_number_only_grows_and_an_empty_chained_batch_counts(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]
) -> None:
    store = make_store(settings)
    store.store_batch([], NOW, chain=Chain("w", 1))  # e.g. every record's partition left
    assert len(store.store_batch(accepted(1), NOW, chain=Chain("w", 2, 1)).stored) == 1
    # Batch 2's reply was lost; 3 went on (2 is stored), then 2 is retried.
    assert len(store.store_batch(accepted(1), NOW, chain=Chain("w", 3, 2)).stored) == 1
    store.store_batch(accepted(1), NOW, chain=Chain("w", 2))
    assert len(store.store_batch(accepted(1), NOW, chain=Chain("w", 4, 3)).stored) == 1
    # Writers do not wait for each other.
    assert len(store.store_batch(accepted(1), NOW, chain=Chain("v", 1)).stored) == 1
    with pytest.raises(StoreFenced):
        store.store_batch(accepted(1), NOW, chain=Chain("v", 3, 2))


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


def test_count_retention_evicts_a_bounded_number_per_call_and_converges(
    settings: ConsumerSettings,
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
) -> None:
    # Lowering the bound a lot (as from 1,000,000 to 100,000) must not make one script
    # evict everything at once: Redis answers nobody else while a script runs.
    p = settings.redis_prefix
    unbounded = make_store(with_(settings, retention_max_events=0))
    old = [
        Accepted(make_record(f"u{n % 7}", ["LOGIN", "LOGOUT"][n % 2]), 0, n) for n in range(3000)
    ]
    for start in range(0, len(old), 500):
        unbounded.store_batch(old[start : start + 500], NOW)
    small = make_store(with_(settings, retention_max_events=100))
    cap = EVICT_BASE + EVICT_PER_STORED * 1

    def consistent() -> int:
        size = int(redis_client.zcard(f"{p}:index"))
        users = sum(redis_client.zcard(f"{p}:user:u{n}") for n in range(8))
        types = sum(redis_client.zcard(f"{p}:type:{t}") for t in ("LOGIN", "LOGOUT"))
        assert users == types == size
        return size

    before = consistent()
    calls = 0
    new: list[Accepted] = []
    while before > 100:
        new.append(Accepted(make_record("u7", "LOGIN"), 1, calls))
        assert len(small.store_batch(new[-1:], NOW).stored) == 1
        calls += 1
        after = consistent()
        assert before + 1 - after <= cap
        before = after
    assert before == 100
    assert calls >= (3000 - 100) // cap
    kept = [m.decode() for m in redis_client.zrange(f"{p}:index", 0, -1)]
    assert kept == [a.event_id for a in (old + new)[-100:]]  # the newest, in order
    assert all(redis_client.exists(f"{p}:event:{k}") for k in kept)
    assert redis_client.exists(f"{p}:event:{old[0].event_id}") == 0


def test_retention_tolerates_a_wrong_type_index_key_of_an_evicted_event(
    settings: ConsumerSettings,
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
) -> None:
    # The evicted event is durable already; a broken index key of it must not stop the
    # worker from storing new ones.
    p = settings.redis_prefix
    store = make_store(with_(settings, retention_max_events=2))
    first = accepted(2, "ann")
    store.store_batch(first, NOW)
    redis_client.delete(f"{p}:user:ann")
    redis_client.set(f"{p}:user:ann", "planted by hand")
    result = store.store_batch(accepted(2, "bob", 10), NOW)
    assert len(result.stored) == 2
    assert redis_client.zcard(f"{p}:index") == 2
    assert redis_client.exists(f"{p}:event:{first[0].event_id}") == 0


def test_any_user_id_and_event_type_the_schema_allows_are_stored_under_their_own_keys(
    settings: ConsumerSettings,
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
) -> None:
    # The script receives the batch as two byte blobs with lengths in a header line;
    # separators, digits and multi-byte characters inside the fields must not shift it.
    p = settings.redis_prefix
    odd = [
        ("u 1 2 3 4\n5", "T Y\n"),
        ("üsér-😀", "ÉVÉNT"),
        ("a" * 128, "b" * 64),
        ("0:0 1 1 1 1\n", "x"),
    ]
    batch = [Accepted(make_record(u, t), 2, n) for n, (u, t) in enumerate(odd)]
    # The UUID pattern lets a final newline through (re.match with `$`): kept as given.
    batch.append(Accepted(make_record("plain", eventId=f"{uuid.uuid4()}\n"), 2, 9))
    store = make_store(settings)
    assert len(store.store_batch(batch, NOW).stored) == len(batch)
    for ev in batch:
        user, etype = ev.record["userId"], ev.record["eventType"]
        assert redis_client.zscore(f"{p}:user:{user}", ev.event_id) is not None
        assert redis_client.zscore(f"{p}:type:{etype}", ev.event_id) is not None
        assert redis_client.get(f"{p}:seen:{ev.event_id}") == f"2:{ev.offset}".encode()
        stored = store.get(ev.event_id)
        assert stored is not None and stored["userId"] == user and stored["offset"] == ev.offset

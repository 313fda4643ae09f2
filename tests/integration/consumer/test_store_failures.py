"""A store script that fails half-way must never leave an event marked seen but not
stored: the mark is the last write of an event, so a retry redoes the store, and the
worker holds the offset (backing off, not ready) until the store succeeds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.pipeline.status import StatusFile
from consumer_service.storage import RedisEventStore
from shared.errors import Unavailable

from .conftest import WorkerThread, make_record, produce, wait_until
from .test_worker import committed_total

NOW = "2026-11-24T05:00:00.000Z"


def stored_once(client: redis.Redis, prefix: str, ev: Accepted) -> bool:
    """Body present and exactly one entry in each index (zsets hold a member once, so
    "present" is "once"; the counts guard against a stray copy under another id)."""
    user, etype = ev.record["userId"], ev.record["eventType"]
    return (
        client.exists(f"{prefix}:event:{ev.event_id}") == 1
        and client.zscore(f"{prefix}:index", ev.event_id) is not None
        and client.zscore(f"{prefix}:user:{user}", ev.event_id) is not None
        and client.zscore(f"{prefix}:type:{etype}", ev.event_id) is not None
    )


def test_a_wrong_type_key_leaves_no_seen_mark_and_the_retry_stores_the_event_once(
    settings: ConsumerSettings,
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
) -> None:
    store = make_store(settings)
    p = settings.redis_prefix
    batch = [Accepted(make_record("ann"), 0, 0), Accepted(make_record("ann"), 0, 1)]
    bad = Accepted(make_record("bob"), 0, 2)
    batch += [bad, Accepted(make_record("cat"), 0, 3), Accepted(make_record("cat"), 0, 4)]
    redis_client.set(f"{p}:user:bob", "planted by hand")

    with pytest.raises(Unavailable, match=f"{p}:user:bob"):  # the error names the key
        store.store_batch(batch, NOW)
    assert redis_client.exists(f"{p}:seen:{bad.event_id}") == 0
    for ev in batch:
        if redis_client.exists(f"{p}:seen:{ev.event_id}"):
            assert stored_once(redis_client, p, ev), "marked seen means fully stored"

    redis_client.delete(f"{p}:user:bob")
    retry = store.store_batch(batch, NOW)
    assert bad in retry.stored
    assert not retry.duplicates
    assert all(stored_once(redis_client, p, ev) for ev in batch)
    assert redis_client.zcard(f"{p}:index") == 5
    assert redis_client.zcard(f"{p}:user:bob") == 1
    assert redis_client.zcard(f"{p}:type:LOGIN") == 5
    # Processing order is kept: the redone event sits where the batch put it.
    assert [m.decode() for m in redis_client.zrange(f"{p}:index", 0, -1)] == [
        ev.event_id for ev in batch
    ]
    again = store.store_batch(batch, NOW)
    assert len(again.redelivered) == 5
    assert store.stats()["processed"] == 5


def test_an_expire_time_redis_rejects_leaves_no_seen_mark(
    settings: ConsumerSettings, redis_client: redis.Redis
) -> None:
    # Settings forbid such an age now; the store must stay safe if one gets through.
    client = redis.Redis.from_url(settings.common.redis_url)
    p = settings.redis_prefix
    store = RedisEventStore(client, p, 60, retention_max_age_seconds=10**16)
    ev = Accepted(make_record("ann"), 0, 0)
    try:
        with pytest.raises(Unavailable):
            store.store_batch([ev], NOW)
    finally:
        store.close()
    assert redis_client.exists(f"{p}:seen:{ev.event_id}") == 0


def test_the_worker_holds_the_offset_and_backs_off_until_the_store_is_fixed(
    settings: ConsumerSettings,
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = settings.redis_prefix
    store = make_store(settings)
    status = StatusFile(tmp_path / "status.json")
    redis_client.set(f"{p}:user:bob", "planted by hand")
    good = [make_record("ann") for _ in range(3)]
    bad = make_record("bob")
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, [*good, bad])

    worker = start_worker(settings, store, status_file=status)
    backing_off = wait_until(
        lambda: (s := status.read()) and s.state == "backing_off" and s, 20, "backing off"
    )
    assert f"{p}:user:bob" in backing_off.detail
    time.sleep(1.0)  # several retries: the failing record's offset must not move
    assert committed_total(settings) < 4
    assert redis_client.exists(f"{p}:seen:{bad['eventId']}") == 0
    current = status.read()
    assert current is not None and current.state == "backing_off"
    # Lasting until an operator acts, the refusal is an error in the log, naming the key.
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert refusals and f"{p}:user:bob" in getattr(refusals[0], "error", "")

    redis_client.delete(f"{p}:user:bob")
    wait_until(lambda: committed_total(settings) == 4, 20, "all committed once fixed")
    assert redis_client.zcard(f"{p}:user:bob") == 1
    assert redis_client.zcard(f"{p}:index") == 4
    assert store.get(bad["eventId"]) is not None
    assert store.stats()["processed"] == 4
    assert worker.stop() == 0

"""Erasing a user's stored events on a Redis Cluster: every partition's events and index
entries go, through the read API and `pipeline-admin user erase`; the erasure record in
every partition keeps them out, after the claims expired too, on a real worker's group
reset and on two replicas."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient

from consumer_service.admin.cli import main as admin_main
from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.pipeline.worker import Worker
from consumer_service.storage import PageQuery, RedisClusterEventStore
from consumer_service.storage.erase import ERASE_PER_CALL
from shared.config import CommonSettings
from shared.events import utc_timestamp
from tests.clusterharness import LocalRedisCluster
from tests.integration.consumer.conftest import (
    WorkerThread,
    kafka_dlq,
    make_record,
    produce,
    wait_until,
)
from tests.integration.consumer.test_erasure_lasts import produce_on, reset_to_earliest

NOW = "2026-11-24T05:00:00.000Z"


@pytest.fixture
def store(redis_cluster: LocalRedisCluster, unique: str) -> Iterator[RedisClusterEventStore]:
    store = RedisClusterEventStore(redis_cluster.url, f"erase:{unique}", 3600)
    yield store
    store.close()


@pytest.fixture
def settings(redis_cluster: LocalRedisCluster, store: RedisClusterEventStore) -> ConsumerSettings:
    return ConsumerSettings(
        common=CommonSettings(redis_url=redis_cluster.url),
        redis_prefix=store.keys.prefix,
        redis_mode="cluster",
    )


@pytest.fixture
def client(settings: ConsumerSettings) -> FlaskClient:
    return create_app(settings).test_client()


def ids_of(client: FlaskClient, query: str = "") -> list[str]:
    ids: list[str] = []
    url = f"/events/processed?limit=1000{query}"
    while True:
        body = client.get(url).get_json()
        ids += [e["eventId"] for e in body["events"]]
        if body["next"] is None:
            return ids
        url = f"/events/processed?limit=1000{query}&cursor={body['next']}"


def test_every_partition_of_the_user_is_erased(
    client: FlaskClient, store: RedisClusterEventStore
) -> None:
    # ann's events on every partition, and more than one erase step on one of them.
    events = [Accepted(make_record("ann"), i % 6, i) for i in range(24)]
    events += [Accepted(make_record("ann"), 0, 100 + i) for i in range(ERASE_PER_CALL + 3)]
    others = [Accepted(make_record(f"u{i}"), i % 6, 1000 + i) for i in range(12)]
    store.store_batch(events + others, NOW)

    answer = client.delete("/users/ann/events").get_json()
    assert (answer["userId"], answer["deleted"]) == ("ann", len(events))
    assert ids_of(client, "&userId=ann") == []
    assert sorted(ids_of(client)) == sorted(e.event_id for e in others)
    assert client.get(f"/events/processed/{events[0].event_id}").status_code == 404
    assert client.get("/stats").get_json()["stored"] == len(others)
    # A redelivery is not stored again: the erasure record drops it in every partition.
    again = store.store_batch(events[:6], NOW)
    assert (again.stored, again.erased) == ((), tuple(events[:6]))
    assert ids_of(client, "&userId=ann") == []
    assert client.get("/stats").get_json()["erasedDropped"] == 6


def test_pipeline_admin_on_a_cluster(
    settings: ConsumerSettings, store: RedisClusterEventStore, client: FlaskClient
) -> None:
    store.store_batch([Accepted(make_record("bob"), i, i) for i in range(3)], NOW)
    env = {
        "REDIS_URL": settings.common.redis_url,
        "CONSUMER_REDIS_PREFIX": settings.redis_prefix,
        "CONSUMER_REDIS_MODE": "cluster",
    }
    out = io.StringIO()
    assert admin_main(["user", "erase", "bob"], env=env, out=out, err=io.StringIO()) == 0
    answer = json.loads(out.getvalue())
    assert (answer["userId"], answer["deleted"]) == ("bob", 3)
    assert ids_of(client, "&userId=bob") == []


def at_ms(ms: int) -> str:
    return utc_timestamp(datetime.fromtimestamp(ms / 1000, UTC))


def test_the_cutoff_edges_in_every_partition(redis_cluster: LocalRedisCluster, unique: str) -> None:
    # A one-second dedup window: the claims are gone when the records come back.
    store = RedisClusterEventStore(redis_cluster.url, f"edges:{unique}", 1)
    try:
        store.store_batch([Accepted(make_record("bob"), p, 0) for p in range(3)], NOW)
        cutoff = store.erase_user("ann").cutoff_ms
        times = [cutoff - 1, cutoff, cutoff + 1]
        events = [
            Accepted(make_record("ann", timestamp=at_ms(t)), p, 10 + n)
            for p in range(3)
            for n, t in enumerate(times)
        ]
        result = store.store_batch(events, NOW)
        assert result.erased == tuple(e for e in events if e.record["timestamp"] <= at_ms(cutoff))
        assert result.stored == tuple(e for e in events if e.record["timestamp"] > at_ms(cutoff))
        time.sleep(1.2)
        again = store.store_batch(
            [Accepted(e.record, e.partition, 50 + e.offset) for e in events], NOW
        )
        assert len(again.erased) == 6
        assert store.stats()["erasedDropped"] == 12
    finally:
        store.close()


@pytest.fixture
def worker_settings(
    redis_cluster: LocalRedisCluster,
    kafka_bootstrap: str,
    topic: str,
    consumer_group: str,
    unique: str,
) -> ConsumerSettings:
    return ConsumerSettings(
        common=CommonSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_topic=topic,
            kafka_topic_partitions=6,
            redis_url=redis_cluster.url,
        ),
        consumer_group=consumer_group,
        redis_prefix=f"lasts:{unique}",
        redis_mode="cluster",
        dedup_ttl_seconds=1,
        batch_size=100,
        session_timeout_ms=6000,
        max_poll_interval_ms=30000,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.5,
        redis_timeout_seconds=2.0,
        dlq_flush_timeout_seconds=5.0,
    )


def test_real_workers_on_a_cluster_honour_an_erasure_after_a_group_reset(
    worker_settings: ConsumerSettings,
) -> None:
    settings = worker_settings
    store = RedisClusterEventStore(settings.common.redis_url, settings.redis_prefix, 1)
    workers: list[WorkerThread] = []

    def start() -> WorkerThread:
        own = RedisClusterEventStore(settings.common.redis_url, settings.redis_prefix, 1)
        thread = WorkerThread(Worker(settings, own, kafka_dlq(settings))).start()
        workers.append(thread)
        return thread

    try:
        one, two = start(), start()
        wait_until(
            lambda: one.worker.assigned and two.worker.assigned, 30, "both replicas hold partitions"
        )
        old = [(p, make_record("ann", payload={"p": p})) for p in range(6)]
        bob = [make_record("bob", payload={"n": n}) for n in range(3)]
        produce_on(settings, old)
        produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, bob)
        wait_until(lambda: store.stats()["stored"] == 9, 30, "the events stored")

        assert store.erase_user("ann").deleted == 6
        time.sleep(0.01)
        new = make_record("ann", payload={"after": True})
        produce_on(settings, [(0, new)])
        wait_until(lambda: store.stats()["stored"] == 4, 30, "the new one stored")
        for thread in workers:
            thread.stop()

        time.sleep(1.2)  # the claims and seen marks expire
        reset_to_earliest(settings)
        one, two = start(), start()
        wait_until(lambda: store.stats()["erasedDropped"] == 6, 60, "the old records dropped")
        wait_until(lambda: store.stats()["processed"] >= 8, 30, "the rest re-read")
        page = store.page(PageQuery(limit=1000, user_id="ann"))
        assert [e["eventId"] for e in page.events] == [new["eventId"]]
        assert len(store.page(PageQuery(limit=1000, user_id="bob")).events) == 3
    finally:
        for thread in workers:
            if thread.exit_code is None:
                thread.stop()
        store.close()


def test_a_partition_without_data_yet_is_covered_too(
    redis_cluster: LocalRedisCluster, unique: str
) -> None:
    store = RedisClusterEventStore(redis_cluster.url, f"empty:{unique}", 1, topic_partitions=6)
    try:
        # Nothing stored anywhere yet: the erasure still records itself in the topic's
        # six partitions, so an old event arriving on any of them is dropped.
        erasure = store.erase_user("ann")
        assert erasure.deleted == 0
        old = [
            Accepted(make_record("ann", timestamp=at_ms(erasure.cutoff_ms)), p, 0) for p in range(6)
        ]
        assert store.store_batch(old, NOW).erased == tuple(old)
    finally:
        store.close()

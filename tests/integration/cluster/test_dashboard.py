"""The dashboard on a cluster: the consumer app found by REDIS_URL alone shows the newest
events merged across partitions and the memory of every master."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient

from consumer_service.api import create_app
from consumer_service.api.dashboard.views import state_of
from consumer_service.api.schemas import RECENT_EVENTS
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import RedisClusterEventStore
from shared.config import CommonSettings
from tests.clusterharness import LocalRedisCluster
from tests.integration.consumer.conftest import make_record

# Three batches, each processed a second after the previous one.
BATCHES = ("2026-11-25T05:00:01.000Z", "2026-11-25T05:00:02.000Z", "2026-11-25T05:00:03.000Z")
PER_BATCH = 10


@pytest.fixture
def stored(
    redis_cluster: LocalRedisCluster, unique: str
) -> Iterator[tuple[str, list[list[Accepted]]]]:
    prefix = f"dash:{unique}"
    store = RedisClusterEventStore(redis_cluster.url, prefix, 3600)
    batches = []
    for b, processed_at in enumerate(BATCHES):
        batch = [
            Accepted(make_record(f"u{i % 6}"), i % 6, b * PER_BATCH + i) for i in range(PER_BATCH)
        ]
        store.store_batch(batch, processed_at)
        batches.append(batch)
    yield prefix, batches
    store.close()


@pytest.fixture
def client(
    redis_cluster: LocalRedisCluster, stored: tuple[str, list[list[Accepted]]]
) -> Iterator[FlaskClient]:
    settings = ConsumerSettings(
        common=CommonSettings(redis_url=redis_cluster.url), redis_prefix=stored[0]
    )
    app = create_app(settings)
    yield app.test_client()
    state_of(app).close()
    state_of(app).store.close()


def test_newest_events_merged_across_partitions(
    client: FlaskClient, stored: tuple[str, list[list[Accepted]]]
) -> None:
    body = client.get("/dashboard/data").get_json()
    assert body["redis"]["error"] is None
    # Newest first: by processedAt, then partition, then the partition's sequence (here
    # the batch order of the partition's events).
    newest = sorted(
        (ev for batch in stored[1] for ev in batch),
        key=lambda ev: (ev.offset // PER_BATCH, ev.partition, ev.offset),
        reverse=True,
    )[:RECENT_EVENTS]
    assert [(e["eventId"], e["partition"], e["offset"]) for e in body["recent"]] == [
        (ev.event_id, ev.partition, ev.offset) for ev in newest
    ]
    assert body["stats"]["stored"] == len(BATCHES) * PER_BATCH


def test_memory_is_summed_over_the_masters(
    client: FlaskClient, redis_cluster: LocalRedisCluster
) -> None:
    rc = redis.RedisCluster.from_url(redis_cluster.url)
    try:
        each = [
            int(rc.get_redis_connection(n).info("memory")["used_memory"])
            for n in rc.get_primaries()
        ]
    finally:
        rc.close()
    body = client.get("/dashboard/data").get_json()
    assert body["redis"]["error"] is None
    # Three masters of about the same size: the sum exceeds any one of them.
    assert body["redis"]["usedMemory"] > max(each)
    assert body["redis"]["maxMemory"] == 0  # the harness sets no maxmemory

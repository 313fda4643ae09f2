"""Erasing a user's stored events on a Redis Cluster: every partition's events and index
entries go, through the read API and `pipeline-admin user erase`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from consumer_service.admin.cli import main as admin_main
from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import RedisClusterEventStore
from consumer_service.storage.erase import ERASE_PER_CALL
from shared.config import CommonSettings
from tests.clusterharness import LocalRedisCluster
from tests.integration.consumer.conftest import make_record

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

    answer = client.delete("/users/ann/events")
    assert answer.get_json() == {"userId": "ann", "deleted": len(events)}
    assert ids_of(client, "&userId=ann") == []
    assert sorted(ids_of(client)) == sorted(e.event_id for e in others)
    assert client.get(f"/events/processed/{events[0].event_id}").status_code == 404
    assert client.get("/stats").get_json()["stored"] == len(others)
    # The claims stay: a redelivery is not stored again.
    again = store.store_batch(events[:6], NOW)
    assert again.stored == ()
    assert ids_of(client, "&userId=ann") == []


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
    assert json.loads(out.getvalue()) == {"userId": "bob", "deleted": 3}
    assert ids_of(client, "&userId=bob") == []

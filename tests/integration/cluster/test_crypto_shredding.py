"""Payload data keys on a Redis Cluster: made and read across slots, opened by the read
API, deleted by an erasure."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import replace

import pytest

from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.pipeline.shredding import data_keys, key_client
from consumer_service.storage import RedisClusterEventStore
from shared.config import CommonSettings, EncryptionSettings
from shared.data_keys import DataKeys
from shared.payload_crypto import DataKey, seal
from tests.clusterharness import LocalRedisCluster
from tests.integration.consumer.conftest import make_record

NOW = "2026-11-24T05:00:00.000Z"


@pytest.fixture
def store(redis_cluster: LocalRedisCluster, unique: str) -> Iterator[RedisClusterEventStore]:
    store = RedisClusterEventStore(redis_cluster.url, f"shred:{unique}", 3600)
    yield store
    store.close()


@pytest.fixture
def settings(redis_cluster: LocalRedisCluster, store: RedisClusterEventStore) -> ConsumerSettings:
    key = base64.b64encode(os.urandom(32)).decode()
    return ConsumerSettings(
        common=CommonSettings(redis_url=redis_cluster.url),
        redis_prefix=store.keys.prefix,
        redis_mode="cluster",
        encryption=EncryptionSettings(
            payload_encryption_keys=f"k1:{key}", payload_key_cache_seconds=0
        ),
    )


def fresh_keys(settings: ConsumerSettings) -> DataKeys:
    return data_keys(settings, key_client(settings))


def test_data_keys_are_shared_opened_and_erased_on_a_cluster(
    settings: ConsumerSettings, store: RedisClusterEventStore
) -> None:
    users = [f"user-{n}" for n in range(40)]  # their keys fall in many slots
    made = fresh_keys(settings).for_writing(users)
    again = fresh_keys(settings).for_writing(users)  # another producer: the same keys
    assert {u: k.id for u, k in again.items()} == {u: k.id for u, k in made.items()}

    record = make_record("user-1")
    record["payload"] = seal(made["user-1"], "user-1", record["eventId"], b'{"card":"4111"}')
    store.store_batch([Accepted(record, 0, 0)], NOW)
    client = create_app(replace(settings, api_keys=()), store).test_client()
    event = client.get(f"/events/processed/{record['eventId']}").get_json()
    assert event["payload"] == {"card": "4111"}

    cached = fresh_keys(settings)
    assert isinstance(cached.for_reading(["user-1"])["user-1"], DataKey)
    assert client.delete("/users/user-1/events").status_code == 200
    # The erasure moved the counter: even a process that cached the key lets it go.
    read = cached.for_reading(["user-1", "user-2"])
    assert read["user-1"] is None
    assert isinstance(read["user-2"], DataKey)

"""REDIS_URL alone decides the store: a cluster node gets the cluster store, a single
Redis the single-node one; CONSUMER_REDIS_MODE overrides the question."""

from __future__ import annotations

from dataclasses import replace

import pytest

from consumer_service.api import create_app
from consumer_service.api.dashboard.reads import ClusterDashboardReads, RedisDashboardReads
from consumer_service.api.dashboard.views import state_of
from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisClusterEventStore, RedisEventStore, open_store
from shared.config import CommonSettings
from tests.clusterharness import LocalRedisCluster, free_cluster_ports


def settings_for(url: str, **changes: object) -> ConsumerSettings:
    return replace(ConsumerSettings(common=CommonSettings(redis_url=url)), **changes)  # type: ignore[arg-type]


def test_a_cluster_node_gets_the_cluster_store(redis_cluster: LocalRedisCluster) -> None:
    store = open_store(settings_for(redis_cluster.url), timeout_seconds=2.0, writer=True)
    try:
        assert isinstance(store, RedisClusterEventStore)
        assert store.ping()
        durability = store.durability()
        assert durability.fsync_always and durability.never_evicts
    finally:
        store.close()


def test_a_single_redis_gets_the_single_node_store(redis_url: str) -> None:
    store = open_store(settings_for(redis_url), timeout_seconds=2.0, writer=True)
    try:
        assert isinstance(store, RedisEventStore)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("mode", "kind"), [("cluster", RedisClusterEventStore), ("single", RedisEventStore)]
)
def test_the_mode_setting_skips_the_question(mode: str, kind: type) -> None:
    # Nothing listens there: an explicit mode must not need an answer at start.
    url = f"redis://127.0.0.1:{free_cluster_ports(1)[0]}/0"
    store = open_store(settings_for(url, redis_mode=mode), timeout_seconds=0.2, writer=False)
    try:
        assert isinstance(store, kind)
        assert store.ping() is False
    finally:
        store.close()


@pytest.mark.parametrize(
    ("mode", "kind"), [("cluster", ClusterDashboardReads), ("single", RedisDashboardReads)]
)
def test_the_dashboard_follows_the_mode_setting_as_the_read_api_does(mode: str, kind: type) -> None:
    # Nothing listens there: the setting alone decides, for the API's store and the
    # dashboard's reads alike.
    url = f"redis://127.0.0.1:{free_cluster_ports(1)[0]}/0"
    app = create_app(settings_for(url, redis_mode=mode))
    state = state_of(app)
    try:
        assert type(state.reads) is kind
        assert isinstance(state.store, RedisClusterEventStore) is (mode == "cluster")
    finally:
        state.close()
        state.store.close()


def test_the_dashboard_of_a_cluster_told_single_reads_one_node(
    redis_cluster: LocalRedisCluster,
) -> None:
    app = create_app(settings_for(redis_cluster.url, redis_mode="single"))
    state = state_of(app)
    try:
        assert type(state.reads) is RedisDashboardReads
    finally:
        state.close()
        state.store.close()

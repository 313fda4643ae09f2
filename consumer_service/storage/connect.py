"""Which store REDIS_URL calls for, and opening it: the one place that picks a backend."""

from __future__ import annotations

import logging

import redis

from consumer_service.config import ConsumerSettings
from consumer_service.storage.base import RedisStore
from consumer_service.storage.cluster import RedisClusterEventStore
from consumer_service.storage.single import RedisEventStore
from shared.errors import Unavailable

log = logging.getLogger(__name__)


def is_cluster(url: str, timeout_seconds: float) -> bool:
    """True when the node at `url` runs in cluster mode (INFO cluster). Raises
    `Unavailable` when it does not answer."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )
    try:
        return int(client.info("cluster").get("cluster_enabled", 0)) == 1
    except redis.RedisError as exc:
        raise Unavailable(f"Redis did not answer: {exc}") from exc
    finally:
        client.close()


def redis_mode(settings: ConsumerSettings, timeout_seconds: float) -> str:
    """ "cluster" or "single": what REDIS_URL is, for every reader and writer of the store.
    CONSUMER_REDIS_MODE when it says which (nothing is asked), else (auto) the node's own
    answer to INFO cluster. Raises `Unavailable` when auto and the node does not answer."""
    if settings.redis_mode != "auto":
        return settings.redis_mode
    return "cluster" if is_cluster(settings.common.redis_url, timeout_seconds) else "single"


def open_store(settings: ConsumerSettings, *, timeout_seconds: float, writer: bool) -> RedisStore:
    """The store REDIS_URL calls for: the cluster store when CONSUMER_REDIS_MODE says
    cluster, or (auto) when the node reports cluster_enabled:1; else the single-node
    store. In auto mode a Redis that does not answer yet is taken for a single node, with
    a warning: set CONSUMER_REDIS_MODE to remove the guess. `writer` passes the retention
    and WAIT settings (the worker's store); the read API's store needs neither."""
    url = settings.common.redis_url
    try:
        mode = redis_mode(settings, timeout_seconds)
    except Unavailable as exc:
        log.warning(
            "Redis did not answer whether it is a cluster; using the single-node store "
            "(set CONSUMER_REDIS_MODE=cluster or single to skip the question)",
            extra={"error": str(exc)},
        )
        mode = "single"
    retention = {
        "retention_max_events": settings.retention_max_events if writer else 0,
        "retention_max_age_seconds": settings.retention_max_age_seconds if writer else 0,
        "erasure_ttl_seconds": settings.erasure_ttl_seconds,
    }
    if mode == "cluster":
        log.info("Redis is a cluster: using the cluster store")
        return RedisClusterEventStore(
            url,
            settings.redis_prefix,
            settings.dedup_ttl_seconds,
            timeout_seconds=timeout_seconds,
            wait_replicas=settings.redis_wait_replicas if writer else 0,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
            topic_partitions=settings.common.kafka_topic_partitions,
            **retention,
        )
    return RedisEventStore.from_url(
        url,
        settings.redis_prefix,
        settings.dedup_ttl_seconds,
        timeout_seconds=timeout_seconds,
        **retention,
    )

"""Where processed events live: the `EventStore` contract and its two Redis backends.

    base         the contract, its values and errors, and what the Redis backends share
    keys         the Redis key layout: every key name is built there
    script       the store script (store_batch.lua): its text, answers and arguments
    erase        the erase script (erase_user.lua): deleting one user's events
    single       `RedisEventStore`, on one Redis node
    cluster      `RedisClusterEventStore`, on a Redis Cluster (with cluster_nodes and
                 cluster_page)
    durability   Redis's persistence settings and the worker's start-up check of them
    connect      `open_store`: the backend REDIS_URL calls for

Callers import the names below from here and never ask which backend they hold.
"""

from consumer_service.storage.base import (
    BatchResult,
    Chain,
    EventStore,
    Page,
    PageQuery,
    RedisStore,
    StoreFenced,
    StoreRefused,
)
from consumer_service.storage.cluster import RedisClusterEventStore
from consumer_service.storage.connect import open_store, redis_mode
from consumer_service.storage.durability import Durability, check_durability
from consumer_service.storage.single import RedisEventStore

__all__ = [
    "BatchResult",
    "Chain",
    "Durability",
    "EventStore",
    "Page",
    "PageQuery",
    "RedisClusterEventStore",
    "RedisEventStore",
    "RedisStore",
    "StoreFenced",
    "StoreRefused",
    "check_durability",
    "open_store",
    "redis_mode",
]

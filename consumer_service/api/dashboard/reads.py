"""Read-only views of the store's Redis for the dashboard: the newest events, and how much
memory Redis uses.

Reads the store's key layout, with the names `consumer_service.storage.keys` gives (the
index, a zset of eventId by sequence number, and each event's body), and writes nothing.
It lives apart from `RedisEventStore` so the store's write path and its contract stay as
they are; "newest first" is a need of the dashboard alone.

On a Redis Cluster (`ClusterDashboardReads`, chosen by `RedisDashboardReads.open` with
the read API's rule, `storage.redis_mode`) the same layout exists once per Kafka
partition, under the cluster store's partition tags: the newest events are the newest of
every registered partition, merged, and the memory is the sum over the masters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
from redis.cluster import RedisCluster

from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisClusterEventStore, redis_mode
from consumer_service.storage.keys import KeyLayout
from shared.errors import Unavailable

# The fields of a stored event the dashboard lists. Not the payload: the page refreshes
# every second and shows who did what, not the data.
RECENT_FIELDS = (
    "eventId",
    "userId",
    "eventType",
    "timestamp",
    "processedAt",
    "partition",
    "offset",
)


@dataclass(frozen=True)
class RedisMemory:
    """INFO memory, in bytes; `max_bytes` is 0 when Redis has no limit."""

    used_bytes: int
    max_bytes: int


class RedisDashboardReads:
    """The dashboard's reads of one store prefix. Every method raises `Unavailable` when
    Redis does not answer within the client's timeout, and nothing else for Redis trouble."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._keys = KeyLayout(prefix)

    @classmethod
    def open(cls, settings: ConsumerSettings, timeout_seconds: float) -> RedisDashboardReads:
        """The reads for the store of `settings`: `ClusterDashboardReads` when
        `redis_mode` says cluster (CONSUMER_REDIS_MODE, else the node's answer), as for the
        read API, else the single-node reads. Raises `Unavailable` when the mode is auto
        and the node does not answer (the caller asks again on its next use)."""
        url, prefix = settings.common.redis_url, settings.redis_prefix
        if redis_mode(settings, timeout_seconds) == "cluster":
            return ClusterDashboardReads(
                RedisClusterEventStore(url, prefix, 0, timeout_seconds=timeout_seconds)
            )
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        return cls(client, prefix)

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` stored events, newest (highest sequence number) first, each cut to
        RECENT_FIELDS. An index entry whose event retention has already deleted is skipped,
        so the list may be shorter than `limit` for a moment."""
        try:
            ids = cast("list[bytes]", self._redis.zrevrange(self._keys.index, 0, limit - 1))
            if not ids:
                return []
            bodies = cast(
                "list[bytes | None]",
                self._redis.mget([self._keys.event(i.decode()) for i in ids]),
            )
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc
        return [_recent(orjson.loads(body)) for body in bodies if body is not None]

    def memory(self) -> RedisMemory:
        """Redis's memory use (INFO memory)."""
        try:
            info = self._redis.info("memory")
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc
        return RedisMemory(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))

    def close(self) -> None:
        self._redis.close()


class ClusterDashboardReads(RedisDashboardReads):
    """The dashboard's reads of one prefix of a Redis Cluster, through the cluster store's
    own key names and partition registry (docs/scaling.md, "Key layout"). The same
    contract as `RedisDashboardReads`."""

    def __init__(self, store: RedisClusterEventStore) -> None:
        # The store is used read-only: its registry, key names and cluster client.
        self._store = store

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` stored events, newest first across partitions: by `processedAt`,
        then partition and sequence number (the reverse of the read API's page order on
        a cluster). Each partition's index gives its own newest `limit`, so the merge is
        exact; an entry retention has just deleted is skipped."""
        store = self._store
        parts = store.partitions()
        if not parts:
            return []
        keys = [store.keys.partition(p) for p in parts]

        def read(rc: RedisCluster) -> list[tuple[int, list[tuple[bytes, float]], list[Any]]]:
            with cast(Any, rc).pipeline() as pipe:
                for layout in keys:
                    pipe.zrevrange(layout.index, 0, limit - 1, withscores=True)
                heads = cast("list[list[tuple[bytes, float]]]", pipe.execute())
            with cast(Any, rc).pipeline() as pipe:
                # redis-py's cluster pipeline refuses MGET: one GET per event, still one
                # round trip per node.
                for layout, rows in zip(keys, heads, strict=True):
                    for i, _ in rows:
                        pipe.get(layout.event(i.decode()))
                bodies = iter(cast("list[bytes | None]", pipe.execute()))
            return [
                (p, rows, [next(bodies) for _ in rows])
                for p, rows in zip(parts, heads, strict=True)
            ]

        found: list[tuple[str, int, int, dict[str, Any]]] = []
        for p, rows, bodies in cast(
            "list[tuple[int, list[tuple[bytes, float]], list[bytes | None]]]", store.read(read)
        ):
            for (_, seq), body in zip(rows, bodies, strict=True):
                if body is None:
                    continue
                event = orjson.loads(body)
                found.append((str(event.get("processedAt", "")), p, int(seq), event))
        found.sort(key=lambda row: row[:3], reverse=True)
        return [_recent(event) for *_, event in found[:limit]]

    def memory(self) -> RedisMemory:
        """INFO memory summed over the masters (replicas hold copies, not more data);
        `max_bytes` is 0 when any master has no limit, as the sum would then mean none."""

        def read(rc: RedisCluster) -> list[dict[str, Any]]:
            return [
                rc.get_redis_connection(node).info("memory")
                for node in cast(Any, rc).get_primaries()
            ]

        infos = cast("list[dict[str, Any]]", self._store.read(read))
        limits = [int(info.get("maxmemory", 0)) for info in infos]
        return RedisMemory(
            sum(int(info.get("used_memory", 0)) for info in infos),
            0 if 0 in limits else sum(limits),
        )

    def close(self) -> None:
        self._store.close()


def _recent(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event[k] for k in RECENT_FIELDS if k in event}

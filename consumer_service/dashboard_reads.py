"""Read-only views of the store's Redis for the dashboard: the newest events, and how much
memory Redis uses.

Reads the key layout that `consumer_service.store` documents (`<prefix>:index`, a zset of
eventId by sequence number, and `<prefix>:event:<eventId>`) and writes nothing. It lives
apart from `RedisEventStore` so the store's write path and its contract stay as they are;
"newest first" is a need of the dashboard alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis

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
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout_seconds: float) -> RedisDashboardReads:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        return cls(client, prefix)

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` stored events, newest (highest sequence number) first, each cut to
        RECENT_FIELDS. An index entry whose event retention has already deleted is skipped,
        so the list may be shorter than `limit` for a moment."""
        try:
            ids = cast("list[bytes]", self._redis.zrevrange(f"{self._prefix}:index", 0, limit - 1))
            if not ids:
                return []
            bodies = cast(
                "list[bytes | None]",
                self._redis.mget([f"{self._prefix}:event:{i.decode()}" for i in ids]),
            )
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc
        events = []
        for body in bodies:
            if body is None:
                continue
            event = orjson.loads(body)
            events.append({k: event[k] for k in RECENT_FIELDS if k in event})
        return events

    def memory(self) -> RedisMemory:
        """Redis's memory use (INFO memory)."""
        try:
            info = self._redis.info("memory")
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc
        return RedisMemory(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))

    def close(self) -> None:
        self._redis.close()

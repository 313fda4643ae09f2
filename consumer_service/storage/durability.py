"""Whether Redis keeps what it acknowledged: its persistence and eviction settings, and
the start-up check the worker runs on them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Durability:
    """Redis's persistence and eviction settings as it reports them; all None when it
    could not be asked (CONFIG disabled, as on most managed services, or Redis not
    answering), with `problem` saying why."""

    appendonly: str | None
    appendfsync: str | None
    maxmemory_policy: str | None = None
    problem: str | None = None

    @property
    def fsync_always(self) -> bool:
        """True when an acknowledged write is on disk: AOF on, fsync on every write."""
        return self.appendonly == "yes" and self.appendfsync == "always"

    @property
    def never_evicts(self) -> bool:
        """True when Redis refuses writes at its memory limit rather than delete keys."""
        return self.maxmemory_policy == "noeviction"

    @property
    def safe(self) -> bool:
        """True when both hold: an acknowledged batch survives a crash and a full memory."""
        return self.fsync_always and self.never_evicts


def read_durability(client: redis.Redis) -> Durability:
    """One node's answer to CONFIG GET. Raises `redis.RedisError` when it does not give
    one (the caller turns that into `Durability.problem`)."""
    found = client.config_get("appendonly")
    found.update(client.config_get("appendfsync"))
    found.update(client.config_get("maxmemory-policy"))
    return Durability(
        _text(found.get("appendonly")),
        _text(found.get("appendfsync")),
        _text(found.get("maxmemory-policy")),
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").lower()
    return None if value is None else str(value).lower()


class DurabilityReport(Protocol):
    def durability(self) -> Durability:
        """Never raises."""
        ...


def check_durability(store: DurabilityReport, require: bool) -> bool:
    """Log whether acknowledged batches survive in Redis; False when the worker must not
    start (`require` set and Redis not confirmed safe on both counts below).

    The worker commits a batch's offsets as soon as Redis answered the store script, and
    Kafka never delivers those records again. That is only safe when

    * Redis has the script on disk by then: appendonly yes plus appendfsync always.
      Anything less (everysec, no AOF) can lose a second or more of events on a crash.
    * Redis never deletes keys by itself: maxmemory-policy noeviction. Any other policy
      may evict events, seen marks (a replayed record is then stored again) or the
      sequence counter (the read API's cursors restart) once memory is full.
    """
    found = store.durability()
    facts = {
        "appendonly": found.appendonly,
        "appendfsync": found.appendfsync,
        "maxmemory_policy": found.maxmemory_policy,
    }
    if found.safe:
        log.info(
            "Redis durability: every write is on disk before it is answered, and no key "
            "is ever evicted",
            extra=facts,
        )
        return True
    _log_shortfalls(found, facts)
    if require:
        log.error(
            "not starting: CONSUMER_REQUIRE_DURABLE_REDIS (or its old name "
            "CONSUMER_REQUIRE_REDIS_FSYNC) is set and Redis is not confirmed to run with "
            "appendonly yes, appendfsync always and maxmemory-policy noeviction",
            extra=facts,
        )
        return False
    return True


def _log_shortfalls(found: Durability, facts: dict[str, str | None]) -> None:
    """One log line per way acknowledged events can be lost, with the fix."""
    if found.problem is not None:
        log.warning(
            "could not check Redis durability (CONFIG GET refused or Redis not answering); "
            "make sure it runs with appendonly yes, appendfsync always and "
            "maxmemory-policy noeviction, or acknowledged events can be lost",
            extra={"error": found.problem},
        )
        return
    if not found.fsync_always:
        log.error(
            "Redis does not write every change to disk before answering: acknowledged "
            "events can be lost on a Redis crash. Run Redis with appendonly yes and "
            "appendfsync always (CONFIG SET appendonly yes, CONFIG SET appendfsync always, "
            "then CONFIG REWRITE)",
            extra=facts,
        )
    if not found.never_evicts:
        log.error(
            "Redis may evict keys when its memory is full: events can be lost, replayed "
            "records stored twice (their seen marks evicted) and read cursors restarted "
            "(the sequence counter evicted). Run Redis with maxmemory-policy noeviction "
            "(CONFIG SET maxmemory-policy noeviction, then CONFIG REWRITE); at the limit "
            "the worker then backs off instead",
            extra=facts,
        )

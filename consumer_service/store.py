"""Where processed events live: Redis, shared by every replica.

Key layout under one prefix P (default `ua`), all written by ONE Lua script per batch:

    P:seen:<eventId>   string "<partition>:<offset>" of the first copy, EX dedup TTL
    P:event:<eventId>  string, the stored form (StoredEventSchema) as compact JSON
    P:seq              string counter; each stored event takes the next value
    P:index            zset eventId -> seq: every stored event in processing order
    P:user:<userId>    zset eventId -> seq: one user's events
    P:type:<eventType> zset eventId -> seq: one event type's events
    P:stats            hash processed, duplicates, deadLettered, deadLettered:<reason>,
                       type:<eventType>

The sequence number is both the processing order and the read API's paging cursor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis

from consumer_service.processing import Accepted
from shared.errors import Unavailable

log = logging.getLogger(__name__)

# `#!lua` (Redis 7 script flags, none set): the script is refused up front when Redis is
# out of memory instead of failing half-way, so it either runs whole or not at all.
STORE_BATCH_LUA = """#!lua
local prefix = ARGV[1]
local dedup_ttl = tonumber(ARGV[2])
local max_events = tonumber(ARGV[3])
local max_age = tonumber(ARGV[4])
local n_dead = tonumber(ARGV[5])
local stats = prefix .. ':stats'
local index = prefix .. ':index'

-- Age retention: events expire by TTL in the order they were stored, so the stale
-- entries of an index are at its front. Bounded work per call.
local function prune_front(key, limit)
  for _ = 1, limit do
    local first = redis.call('ZRANGE', key, 0, 0)
    if #first == 0 then return end
    if redis.call('EXISTS', prefix .. ':event:' .. first[1]) == 1 then return end
    redis.call('ZREM', key, first[1])
  end
end

local i = 6
for _ = 1, n_dead do
  local count = tonumber(ARGV[i + 1])
  redis.call('HINCRBY', stats, 'deadLettered', count)
  redis.call('HINCRBY', stats, 'deadLettered:' .. ARGV[i], count)
  i = i + 2
end

local results = {}
local stored = 0
while i <= #ARGV do
  local id, user, etype, origin, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local seen = prefix .. ':seen:' .. id
  if redis.call('SET', seen, origin, 'NX', 'EX', dedup_ttl) then
    local seq = redis.call('INCR', prefix .. ':seq')
    local ekey = prefix .. ':event:' .. id
    if max_age > 0 then
      redis.call('SET', ekey, body, 'EX', max_age)
    else
      redis.call('SET', ekey, body)
    end
    local ukey = prefix .. ':user:' .. user
    local tkey = prefix .. ':type:' .. etype
    redis.call('ZADD', index, seq, id)
    redis.call('ZADD', ukey, seq, id)
    redis.call('ZADD', tkey, seq, id)
    redis.call('HINCRBY', stats, 'processed', 1)
    redis.call('HINCRBY', stats, 'type:' .. etype, 1)
    if max_age > 0 then
      prune_front(ukey, 4)
      prune_front(tkey, 4)
      redis.call('EXPIRE', ukey, max_age)
    end
    stored = stored + 1
    results[#results + 1] = seq
  elseif redis.call('GET', seen) == origin then
    -- The very record that set the mark, read again after a crash or rebalance before
    -- its offset was committed: a redelivery, not a duplicate event.
    results[#results + 1] = -1
  else
    redis.call('HINCRBY', stats, 'duplicates', 1)
    results[#results + 1] = 0
  end
end

if max_events > 0 then
  local excess = redis.call('ZCARD', index) - max_events
  if excess > 0 then
    local old = redis.call('ZRANGE', index, 0, excess - 1)
    for _, id in ipairs(old) do
      local ekey = prefix .. ':event:' .. id
      local body = redis.call('GET', ekey)
      if body then
        local ok, ev = pcall(cjson.decode, body)
        if ok and type(ev) == 'table' then
          redis.call('ZREM', prefix .. ':user:' .. tostring(ev['userId']), id)
          redis.call('ZREM', prefix .. ':type:' .. tostring(ev['eventType']), id)
        end
        redis.call('DEL', ekey)
      end
    end
    redis.call('ZREMRANGEBYRANK', index, 0, excess - 1)
  end
end
if max_age > 0 then
  prune_front(index, 2 * stored + 16)
end
return results
"""


@dataclass(frozen=True)
class BatchResult:
    """What one store_batch did, per accepted event in input order."""

    stored: tuple[Accepted, ...]
    duplicates: tuple[Accepted, ...]
    redelivered: tuple[Accepted, ...]


@dataclass(frozen=True)
class Durability:
    """Redis's persistence settings as it reports them; both None when it could not be
    asked (CONFIG disabled, as on most managed services, or Redis not answering), with
    `problem` saying why."""

    appendonly: str | None
    appendfsync: str | None
    problem: str | None = None

    @property
    def fsync_always(self) -> bool:
        """True when an acknowledged write is on disk: AOF on, fsync on every write."""
        return self.appendonly == "yes" and self.appendfsync == "always"


@dataclass(frozen=True)
class PageQuery:
    """One page of stored events. `since` (inclusive) and `until` (exclusive) are
    timestamps in the shared format, so they compare as strings."""

    limit: int = 100
    cursor: int = 0
    user_id: str | None = None
    event_type: str | None = None
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    total: int
    next_cursor: int | None


class EventStore(Protocol):
    """Storage of processed events. Every method raises `Unavailable` when the backend
    does not answer, and nothing else for backend trouble."""

    def store_batch(
        self,
        events: Sequence[Accepted],
        processed_at: str,
        dead_lettered: Mapping[str, int] | None = None,
    ) -> BatchResult:
        """Atomically, for each event in order: mark its eventId seen and store it with its
        indexes, or count it as a duplicate. Also adds `dead_lettered` counts per reason.
        One round trip; either all of it is durable when this returns, or none of it
        happened and it raises. Safe to call again with the same batch."""
        ...

    def get(self, event_id: str) -> dict[str, Any] | None:
        """The stored form of one event, or None."""
        ...

    def page(self, query: PageQuery, max_scan: int = 5000) -> Page:
        """Events after `query.cursor` in processing order, filtered. Examines at most
        `max_scan` index entries, so a page may be short with `next_cursor` still set."""
        ...

    def stats(self) -> dict[str, Any]:
        """Totals: processed, duplicatesSkipped, deadLettered (and by reason), stored,
        byEventType."""
        ...

    def ping(self) -> bool:
        """True when the backend answers."""
        ...


class RedisEventStore:
    """EventStore on one Redis (not Cluster: the script builds key names itself)."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        dedup_ttl_seconds: int,
        retention_max_events: int = 0,
        retention_max_age_seconds: int = 0,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._dedup_ttl = dedup_ttl_seconds
        self._max_events = retention_max_events
        self._max_age = retention_max_age_seconds
        self._script = client.register_script(STORE_BATCH_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str,
        dedup_ttl_seconds: int,
        *,
        retention_max_events: int = 0,
        retention_max_age_seconds: int = 0,
        timeout_seconds: float = 5.0,
    ) -> RedisEventStore:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        return cls(
            client, prefix, dedup_ttl_seconds, retention_max_events, retention_max_age_seconds
        )

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def store_batch(
        self,
        events: Sequence[Accepted],
        processed_at: str,
        dead_lettered: Mapping[str, int] | None = None,
    ) -> BatchResult:
        dead = {reason: n for reason, n in (dead_lettered or {}).items() if n}
        if not events and not dead:
            return BatchResult((), (), ())
        args: list[str | bytes | int] = [
            self._prefix,
            self._dedup_ttl,
            self._max_events,
            self._max_age,
            len(dead),
        ]
        for reason, n in dead.items():
            args += [reason, n]
        for ev in events:
            args += [
                ev.event_id,
                str(ev.record["userId"]),
                str(ev.record["eventType"]),
                f"{ev.partition}:{ev.offset}",
                ev.stored_form(processed_at),
            ]
        try:
            results = self._script(keys=[], args=args)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not store the batch: {exc}") from exc
        stored: list[Accepted] = []
        dupes: list[Accepted] = []
        again: list[Accepted] = []
        for ev, r in zip(events, results, strict=True):
            (stored if r > 0 else dupes if r == 0 else again).append(ev)
        return BatchResult(tuple(stored), tuple(dupes), tuple(again))

    def get(self, event_id: str) -> dict[str, Any] | None:
        try:
            body = cast("bytes | None", self._redis.get(self._key("event", event_id)))
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc
        return None if body is None else _loads(body)

    def page(self, query: PageQuery, max_scan: int = 5000) -> Page:
        if query.user_id is not None:
            key = self._key("user", query.user_id)
        elif query.event_type is not None:
            key = self._key("type", query.event_type)
        else:
            key = self._key("index")
        try:
            return self._page(key, query, max_scan)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc

    def _page(self, key: str, q: PageQuery, max_scan: int) -> Page:
        events: list[dict[str, Any]] = []
        stale: list[bytes] = []
        last = q.cursor
        scanned = 0
        exhausted = False
        while len(events) < q.limit and scanned < max_scan:
            chunk = min(max(q.limit - len(events), 50), max_scan - scanned)
            rows = cast(
                "list[tuple[bytes, float]]",
                self._redis.zrangebyscore(
                    key, f"({last}", "+inf", start=0, num=chunk, withscores=True
                ),
            )
            if not rows:
                exhausted = True
                break
            bodies = cast(
                "list[bytes | None]",
                self._redis.mget([self._key("event", m.decode()) for m, _ in rows]),
            )
            for (member, score), body in zip(rows, bodies, strict=True):
                scanned += 1
                last = int(score)
                if body is None:
                    stale.append(member)
                    continue
                event = _loads(body)
                if _matches(event, q):
                    events.append(event)
                    if len(events) == q.limit:
                        break
            if len(rows) < chunk and len(events) < q.limit:
                exhausted = True
                break
        if stale:
            # Left behind by retention; dropped here so the next reader skips less.
            self._redis.zrem(key, *stale)
        if not exhausted and not self._redis.zrangebyscore(key, f"({last}", "+inf", start=0, num=1):
            exhausted = True
        total = int(self._redis.zcard(self._key("index")))
        return Page(events, total, None if exhausted else last)

    def stats(self) -> dict[str, Any]:
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._key("stats"))
                pipe.zcard(self._key("index"))
                raw, stored = pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc
        fields = {k.decode(): int(v) for k, v in raw.items()}
        return {
            "processed": fields.get("processed", 0),
            "duplicatesSkipped": fields.get("duplicates", 0),
            "deadLettered": fields.get("deadLettered", 0),
            "deadLetteredByReason": {
                k.split(":", 1)[1]: v
                for k, v in sorted(fields.items())
                if k.startswith("deadLettered:")
            },
            "stored": int(stored),
            "byEventType": {
                k.split(":", 1)[1]: v for k, v in sorted(fields.items()) if k.startswith("type:")
            },
        }

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def durability(self) -> Durability:
        """What Redis says about its persistence (CONFIG GET); never raises."""
        try:
            found = self._redis.config_get("appendonly")
            found.update(self._redis.config_get("appendfsync"))
        except redis.RedisError as exc:
            return Durability(None, None, f"{type(exc).__name__}: {exc}")
        return Durability(_text(found.get("appendonly")), _text(found.get("appendfsync")))

    def close(self) -> None:
        self._redis.close()


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").lower()
    return None if value is None else str(value).lower()


def check_durability(store: RedisEventStore, require: bool) -> bool:
    """Log whether acknowledged batches survive a Redis crash; False when the worker must
    not start (`require` set and fsync-always not confirmed).

    The worker commits a batch's offsets as soon as Redis answered the store script. That
    is only safe when Redis has the script on disk by then: appendonly yes plus
    appendfsync always. Anything less (everysec, no AOF) can lose up to a second or more
    of events that Kafka will never deliver again.
    """
    found = store.durability()
    facts = {"appendonly": found.appendonly, "appendfsync": found.appendfsync}
    if found.fsync_always:
        log.info("Redis persistence: every write is on disk before it is answered", extra=facts)
        return True
    if found.problem is not None:
        log.warning(
            "could not check Redis persistence (CONFIG GET refused or Redis not answering); "
            "make sure it runs with appendonly yes and appendfsync always, or acknowledged "
            "events can be lost on a Redis crash",
            extra={"error": found.problem},
        )
    else:
        log.error(
            "Redis does not write every change to disk before answering: acknowledged "
            "events can be lost on a Redis crash. Run Redis with appendonly yes and "
            "appendfsync always (CONFIG SET appendonly yes, CONFIG SET appendfsync always, "
            "then CONFIG REWRITE)",
            extra=facts,
        )
    if require:
        log.error(
            "not starting: CONSUMER_REQUIRE_REDIS_FSYNC is set and Redis is not confirmed "
            "to run with appendonly yes and appendfsync always",
            extra=facts,
        )
        return False
    return True


def _loads(body: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(body)
    return value


def _matches(event: Mapping[str, Any], q: PageQuery) -> bool:
    if q.user_id is not None and event.get("userId") != q.user_id:
        return False
    if q.event_type is not None and event.get("eventType") != q.event_type:
        return False
    ts = str(event.get("timestamp", ""))
    if q.since is not None and ts < q.since:
        return False
    return not (q.until is not None and ts >= q.until)

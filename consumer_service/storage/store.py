"""Where processed events live: Redis, shared by every replica.

Key layout under one prefix P (default `ua`), all written by ONE Lua script per batch:

    P:seen:<eventId>   string "<partition>:<offset>" of the first copy, EX dedup TTL;
                       written last, so a mark means the event was fully stored
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
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis

from consumer_service.pipeline.processing import Accepted
from shared.errors import PipelineError, Unavailable

log = logging.getLogger(__name__)

# What the script answers per event (see its header). A stored event answers its sequence
# number, always > 0.
DUPLICATE = 0
REDELIVERED = -1

# Count retention evicts at most EVICT_BASE + EVICT_PER_STORED x (events stored by the
# call) per call: Redis answers nobody else while a script runs, so lowering
# CONSUMER_RETENTION_MAX_EVENTS by 900,000 must not become one 900,000-event call. Each
# call evicts more than it stores, so the index still converges on the bound, a few
# thousand events per call (a few ms of Redis time).
EVICT_BASE = 1000
EVICT_PER_STORED = 2

# `#!lua` (Redis 7 script flags, none set): the script is refused up front when Redis is
# out of memory instead of failing half-way.
STORE_BATCH_LUA = """#!lua
--[[ Store one batch of events: dedup, body, indexes, counters, retention.

ARGV layout
  [1] prefix            every key below starts with it
  [2] dedup_ttl         seconds a seen mark lives
  [3] max_events        count retention: most events kept; 0 = unbounded
  [4] max_age           age retention: seconds an event lives; 0 = off
  [5] evict_base        count retention: evictions allowed per call ...
  [6] evict_per_stored  ... plus this many per event stored by this call
  [7] writer            "" or a writer's key suffix: then this call is batch [8] of that
                          writer, whose number is kept in P:writer:<writer> once stored
  [8] batch             this batch's number (ignored without a writer)
  [9] after             0, or a batch number of the same writer: unless that batch is
                          stored, this call writes nothing and answers "FENCED"
  [10] n_dead           how many (reason, count) pairs follow
  then n_dead pairs     reason, count: dead-letter counters to add
  then events           every event, concatenated: its origin ("<partition>:<offset>"),
                          eventId, eventType and userId, each a 2-byte big-endian length
                          and the bytes, then its stored form (compact JSON) with a
                          4-byte length

One argument for the whole batch rather than five per event: the client spends less time
encoding arguments than the script spends cutting them apart, and struct.unpack cuts
one event in a single call.

Result: one integer per event, in input order, or the string FENCED (nothing written)
  > 0  STORED       stored by this call; the value is its sequence number
   0   DUPLICATE    another record with this eventId was stored before
  -1   REDELIVERED  this very record (same origin) was stored before

Redis does not undo a script's earlier writes when a later command fails. So the seen
marks are the LAST writes of the batch: a mark means the event is fully stored, and a
script that fails half-way leaves no mark. The retry then redoes the batch, and the redo
doubles nothing: SET overwrites a body, ZADD moves each index entry to the new sequence
number. Counters come after every write that can fail on a key. A failing write raises
STORE_FAILED naming the key; the worker retries the batch and commits nothing. Retention
only tidies up after events that are already durable, so its failures are logged
(Redis's log) and skipped rather than allowed to block every later batch.

The work is done a phase at a time, so most commands serve the whole batch (one MGET of
the marks, one INCRBY for the sequence numbers, one MSET of the bodies, one ZADD per
type...) instead of one call per event and key: a Lua call into Redis costs about as
much as the write it makes.
--]]
local prefix = ARGV[1]
local dedup_ttl = tonumber(ARGV[2])
local max_events = tonumber(ARGV[3])
local max_age = tonumber(ARGV[4])
local evict_base = tonumber(ARGV[5])
local evict_per_stored = tonumber(ARGV[6])
local writer = ARGV[7]
local batch_no = tonumber(ARGV[8])
local after = tonumber(ARGV[9])
local n_dead = tonumber(ARGV[10])
local FIRST_DEAD = 11
local DUPLICATE, REDELIVERED = 0, -1
-- A writer's number only has to outlive the batch sent after it (milliseconds); a writer
-- that died leaves its key behind for this long.
local WRITER_TTL = 600
local stats = prefix .. ':stats'
local index = prefix .. ':index'

-- A write the batch depends on: its failure fails the script, naming the key.
local function must(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    error({err = 'STORE_FAILED ' .. cmd .. ' ' .. key .. ': ' .. r.err})
  end
  return r
end

-- Cleanup after durable events: a failure is logged and skipped (nil).
local function tolerate(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    redis.log(redis.LOG_WARNING, 'retention skipped ' .. cmd .. ' ' .. key .. ': ' .. r.err)
    return nil
  end
  return r
end

-- Age retention: events expire by TTL in the order they were stored, so the stale
-- entries of an index are at its front. Bounded work per call.
local function prune_front(key, limit)
  for _ = 1, limit do
    local first = tolerate('ZRANGE', key, 0, 0)
    if not first or #first == 0 then return end
    if redis.call('EXISTS', prefix .. ':event:' .. first[1]) == 1 then return end
    tolerate('ZREM', key, first[1])
  end
end

-- unpack() takes a bounded number of values: variadic commands go in chunks.
local CHUNK = 1000
local function must_each_chunk(cmd, key, values)
  for first = 1, #values, CHUNK do
    must(cmd, key, unpack(values, first, math.min(first + CHUNK - 1, #values)))
  end
end

-- MSET of key, value pairs, in chunks.
local function must_mset(pairs_)
  for first = 1, #pairs_, CHUNK do
    local last = math.min(first + CHUNK - 1, #pairs_)
    must('MSET', pairs_[first], unpack(pairs_, first + 1, last))
  end
end

-- A writer's batches may reach Redis while the one before is still running or being
-- retried; none of them writes anything until the one before it is stored, so a user's
-- events are stored in the order they were consumed.
local writer_key = prefix .. ':writer:' .. writer
if writer ~= '' and after > 0 then
  local done = tonumber(redis.call('GET', writer_key) or '0')
  if done < after then return 'FENCED' end
end

-- 0. The events, cut out of the blob: event e is ids[e], users_of[e], ...
local ids, users_of, types_of, origins, bodies_of = {}, {}, {}, {}, {}
do
  local blob = ARGV[FIRST_DEAD + 2 * n_dead]
  local cut = struct.unpack
  local pos, n, size = 1, 0, #blob
  while pos <= size do
    n = n + 1
    local ok, origin, id, etype, user, body, next_pos = pcall(
      cut, '>Hc0Hc0Hc0Hc0I4c0', blob, pos)
    if not ok then error({err = 'STORE_FAILED bad event at byte ' .. pos}) end
    origins[n], ids[n], types_of[n], users_of[n], bodies_of[n] = origin, id, etype, user, body
    pos = next_pos
  end
end

-- 1. Decide each event from its mark, in input order. An earlier copy in this same
--    batch counts as a mark (its own is not written yet).
local seen_keys = {}
for e = 1, #ids do
  seen_keys[e] = prefix .. ':seen:' .. ids[e]
end
local marks = {}
for first = 1, #seen_keys, CHUNK do
  local got = must('MGET', unpack(seen_keys, first, math.min(first + CHUNK - 1, #seen_keys)))
  for k = 1, #got do marks[first + k - 1] = got[k] end
end

local results = {}
local new = {}          -- the events this call stores, in input order
local batch_origin = {} -- eventId -> origin of its copy stored by this call
local duplicates = 0
for e = 1, #ids do
  local id, origin = ids[e], origins[e]
  local seen = marks[e] or batch_origin[id]
  if not seen then
    new[#new + 1] = e
    batch_origin[id] = origin
    results[e] = 0 -- the sequence number, once known
  elseif seen == origin then
    -- The very record that set the mark, read again after a crash, a rebalance or a
    -- failed script before its offset was committed. The mark is written last, so the
    -- event was fully stored: a redelivery, not a duplicate (even if retention has
    -- deleted the event since).
    results[e] = REDELIVERED
  else
    duplicates = duplicates + 1
    results[e] = DUPLICATE
  end
end
local stored = #new
local by_user, by_type, users, types = {}, {}, {}, {}

if stored > 0 then
  -- 2. Sequence numbers, in input order: one INCRBY for the batch.
  local last_seq = must('INCRBY', prefix .. ':seq', stored)
  for k, e in ipairs(new) do
    results[e] = last_seq - stored + k
  end

  -- 3. Bodies and indexes. A user's or a type's entries go in one ZADD each.
  local bodies, in_index = {}, {}
  for _, e in ipairs(new) do
    local id, user, etype, seq = ids[e], users_of[e], types_of[e], results[e]
    if max_age > 0 then
      must('SET', prefix .. ':event:' .. id, bodies_of[e], 'EX', max_age)
    else
      bodies[#bodies + 1] = prefix .. ':event:' .. id
      bodies[#bodies + 1] = bodies_of[e]
    end
    in_index[#in_index + 1] = seq
    in_index[#in_index + 1] = id
    local u = by_user[user]
    if not u then u = {}; by_user[user] = u; users[#users + 1] = user end
    u[#u + 1] = seq
    u[#u + 1] = id
    local t = by_type[etype]
    if not t then t = {}; by_type[etype] = t; types[#types + 1] = etype end
    t[#t + 1] = seq
    t[#t + 1] = id
  end
  if #bodies > 0 then must_mset(bodies) end
  must_each_chunk('ZADD', index, in_index)
  for _, user in ipairs(users) do
    local ukey = prefix .. ':user:' .. user
    must_each_chunk('ZADD', ukey, by_user[user])
    if max_age > 0 then must('EXPIRE', ukey, max_age) end
  end
  for _, etype in ipairs(types) do
    must_each_chunk('ZADD', prefix .. ':type:' .. etype, by_type[etype])
  end

  -- 4. Counters, after every write that can fail on a key.
  must('HINCRBY', stats, 'processed', stored)
  for _, etype in ipairs(types) do
    must('HINCRBY', stats, 'type:' .. etype, math.floor(#by_type[etype] / 2))
  end
end
if duplicates > 0 then
  must('HINCRBY', stats, 'duplicates', duplicates)
end

-- 5. The seen marks, last: each one says its event is fully stored. The script's
--    busiest loop, so it calls Redis directly, with the TTL as the string it came as.
local ttl_arg = ARGV[2]
for _, e in ipairs(new) do
  local r = redis.pcall('SET', seen_keys[e], origins[e], 'EX', ttl_arg)
  if type(r) == 'table' and r.err then
    error({err = 'STORE_FAILED SET ' .. seen_keys[e] .. ': ' .. r.err})
  end
end
-- Age retention: a few stale entries per event stored, from the front of its indexes.
if max_age > 0 then
  for _, user in ipairs(users) do
    prune_front(prefix .. ':user:' .. user, 2 * #by_user[user])
  end
  for _, etype in ipairs(types) do
    prune_front(prefix .. ':type:' .. etype, 2 * #by_type[etype])
  end
end

-- After the events: a batch that fails on an event is retried whole, and counting its
-- dead letters only once it got this far keeps them from being counted twice.
for d = FIRST_DEAD, FIRST_DEAD + 2 * n_dead - 1, 2 do
  local count = tonumber(ARGV[d + 1])
  must('HINCRBY', stats, 'deadLettered', count)
  must('HINCRBY', stats, 'deadLettered:' .. ARGV[d], count)
end

-- The batch is stored: the writer's next batch may go on. The number only grows (a retry
-- of an older batch whose reply was lost comes after a newer one).
if writer ~= '' then
  local done = tonumber(redis.call('GET', writer_key) or '0')
  must('SET', writer_key, math.max(done, batch_no), 'EX', WRITER_TTL)
end

if max_events > 0 then
  local excess = (tolerate('ZCARD', index) or 0) - max_events
  local budget = evict_base + evict_per_stored * stored
  if excess > budget then excess = budget end
  if excess > 0 then
    local old = tolerate('ZRANGE', index, 0, excess - 1) or {}
    for _, id in ipairs(old) do
      local ekey = prefix .. ':event:' .. id
      local body = tolerate('GET', ekey)
      if body then
        local ok, ev = pcall(cjson.decode, body)
        if ok and type(ev) == 'table' then
          tolerate('ZREM', prefix .. ':user:' .. tostring(ev['userId']), id)
          tolerate('ZREM', prefix .. ':type:' .. tostring(ev['eventType']), id)
        end
      end
      redis.call('DEL', ekey)
    end
    tolerate('ZREMRANGEBYRANK', index, 0, excess - 1)
  end
end
if max_age > 0 then
  prune_front(index, 2 * stored + 16)
end
return results
"""


class StoreFenced(PipelineError):
    """The store wrote nothing because the batch before it (`Chain.after`) is not
    stored yet: send it again once that one is."""


@dataclass(frozen=True)
class Chain:
    """Where a batch stands in its writer's sequence, for a store that accepts a batch
    while the one before it is still in flight (`max_in_flight` > 1).

    `writer` names one worker run (unique, never reused), `number` counts its batches
    from 1, and `after` is the number of the batch that must be stored before this one
    may write anything, or 0 when none is outstanding. Redis may run two calls sent on
    two connections in either order; the check makes the order of what is stored the
    order of the batches anyway."""

    writer: str
    number: int
    after: int = 0


class StoreRefused(Unavailable):
    """Redis answered but refused the store script: a key of the wrong type under the
    prefix (the message names it), out of memory, a read-only replica. Transient as far
    as the caller is concerned (retry, commit nothing), but it lasts until an operator
    acts, so it deserves an error in the log, not a warning."""


def event_blobs(events: Sequence[Accepted], processed_at: str) -> list[bytes]:
    """The events' part of STORE_BATCH_LUA's ARGV: one blob in the layout the script's
    header describes. The schema bounds userId and eventType far below 2-byte lengths
    (USER_ID_MAX, EVENT_TYPE_MAX characters of at most 4 bytes each)."""
    parts: list[bytes] = []
    add = parts.extend
    short = _SHORT.pack
    for ev in events:
        record = ev.record
        origin = b"%d:%d" % (ev.partition, ev.offset)
        event_id = ev.event_id.encode()
        event_type = str(record["eventType"]).encode()
        user_id = str(record["userId"]).encode()
        body = ev.stored_form(processed_at)
        add(
            (
                short(len(origin)),
                origin,
                short(len(event_id)),
                event_id,
                short(len(event_type)),
                event_type,
                short(len(user_id)),
                user_id,
                _LONG.pack(len(body)),
                body,
            )
        )
    return [b"".join(parts)]


_SHORT = struct.Struct(">H")
_LONG = struct.Struct(">I")


@dataclass(frozen=True)
class BatchResult:
    """What one store_batch did, per accepted event in input order."""

    stored: tuple[Accepted, ...]
    duplicates: tuple[Accepted, ...]
    redelivered: tuple[Accepted, ...]


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


@dataclass(frozen=True)
class PageQuery:
    """One page of stored events. `since` (inclusive) and `until` (exclusive) are
    timestamps in the shared format, so they compare as strings. `cursor` is opaque: 0
    for the first page, then the `next_cursor` the same kind of store returned (an int
    here, a string from the cluster store)."""

    limit: int = 100
    cursor: int | str = 0
    user_id: str | None = None
    event_type: str | None = None
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    total: int
    next_cursor: int | str | None


class EventStore(Protocol):
    """Storage of processed events. Every method raises `Unavailable` when the backend
    does not answer, and nothing else for backend trouble."""

    # How many store_batch calls a worker may have running at once: more than one only
    # where the store honours a `Chain`.
    max_in_flight: int

    def store_batch(
        self,
        events: Sequence[Accepted],
        processed_at: str,
        dead_lettered: Mapping[str, int] | None = None,
        chain: Chain | None = None,
    ) -> BatchResult:
        """For each event in order: store it with its indexes and mark its eventId seen,
        or count it as a duplicate (another record had the id) or a redelivery (this very
        record was stored before). Also adds `dead_lettered` counts per reason. One round
        trip; all of it is durable when this returns. When it raises, a prefix of the
        batch may be stored, but an event is only ever marked seen once fully stored, so
        calling again with the same batch completes it: the events stored before come
        back as redelivered, the rest are stored, nothing twice. Raises `StoreRefused`
        (an `Unavailable`) when the backend answered but refused.

        With a `chain` (only where `max_in_flight` > 1), the call may run while the
        batch before it is in flight; it raises `StoreFenced`, having written nothing,
        when that batch (`chain.after`) is not stored yet."""
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

    # A second batch goes out while Redis runs the first: Redis never waits for the
    # worker between two scripts, and one fsync may cover both.
    max_in_flight = 2

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
        chain: Chain | None = None,
    ) -> BatchResult:
        dead = {reason: n for reason, n in (dead_lettered or {}).items() if n}
        if not events and not dead and chain is None:
            # A chained batch runs even when empty: its successor waits for its number.
            return BatchResult((), (), ())
        # In the order of the script's ARGV layout.
        args: list[str | bytes | int] = [
            self._prefix,
            self._dedup_ttl,
            self._max_events,
            self._max_age,
            EVICT_BASE,
            EVICT_PER_STORED,
            *((chain.writer, chain.number, chain.after) if chain else ("", 0, 0)),
            len(dead),
        ]
        for reason, n in dead.items():
            args += [reason, n]
        args += event_blobs(events, processed_at)
        try:
            results = self._script(keys=[], args=args)
        except redis.ResponseError as exc:
            raise StoreRefused(
                f"Redis refused to store the batch, which is retried until an operator "
                f"fixes Redis: {exc}"
            ) from exc
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not store the batch: {exc}") from exc
        if results == b"FENCED":
            raise StoreFenced(f"batch {chain.number if chain else 0} waits for its predecessor")
        stored: list[Accepted] = []
        dupes: list[Accepted] = []
        again: list[Accepted] = []
        for ev, code in zip(events, results, strict=True):
            if code == DUPLICATE:
                dupes.append(ev)
            elif code == REDELIVERED:
                again.append(ev)
            else:
                stored.append(ev)
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
        """What Redis says about its persistence and eviction (CONFIG GET); never raises."""
        try:
            found = self._redis.config_get("appendonly")
            found.update(self._redis.config_get("appendfsync"))
            found.update(self._redis.config_get("maxmemory-policy"))
        except redis.RedisError as exc:
            return Durability(None, None, problem=f"{type(exc).__name__}: {exc}")
        return Durability(
            _text(found.get("appendonly")),
            _text(found.get("appendfsync")),
            _text(found.get("maxmemory-policy")),
        )

    def close(self) -> None:
        self._redis.close()


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
    if found.fsync_always and found.never_evicts:
        log.info(
            "Redis durability: every write is on disk before it is answered, and no key "
            "is ever evicted",
            extra=facts,
        )
        return True
    if found.problem is not None:
        log.warning(
            "could not check Redis durability (CONFIG GET refused or Redis not answering); "
            "make sure it runs with appendonly yes, appendfsync always and "
            "maxmemory-policy noeviction, or acknowledged events can be lost",
            extra={"error": found.problem},
        )
    if found.problem is None and not found.fsync_always:
        log.error(
            "Redis does not write every change to disk before answering: acknowledged "
            "events can be lost on a Redis crash. Run Redis with appendonly yes and "
            "appendfsync always (CONFIG SET appendonly yes, CONFIG SET appendfsync always, "
            "then CONFIG REWRITE)",
            extra=facts,
        )
    if found.problem is None and not found.never_evicts:
        log.error(
            "Redis may evict keys when its memory is full: events can be lost, replayed "
            "records stored twice (their seen marks evicted) and read cursors restarted "
            "(the sequence counter evicted). Run Redis with maxmemory-policy noeviction "
            "(CONFIG SET maxmemory-policy noeviction, then CONFIG REWRITE); at the limit "
            "the worker then backs off instead",
            extra=facts,
        )
    if require:
        log.error(
            "not starting: CONSUMER_REQUIRE_DURABLE_REDIS (or its old name "
            "CONSUMER_REQUIRE_REDIS_FSYNC) is set and Redis is not confirmed to run with "
            "appendonly yes, appendfsync always and maxmemory-policy noeviction",
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

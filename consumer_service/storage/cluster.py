"""Where processed events live when Redis is a Cluster: the `EventStore` contract with
every atomic step inside one hash slot. The design, the key layout and what each failover
setting protects are in docs/scaling.md; in short, with prefix P:

    {P:p<n>}:...          partition n's keys: the single-node layout (store.py's header)
                          under the prefix `{P:p<n>}`, written by the same Lua script
    P:claim:{<eventId>}   "<partition>:<offset>" of the record owning the eventId, SET NX
    {P:meta}:partitions   set of partitions that have data (registered before the data)
    {P:meta}:stats        hash: deadLettered, deadLettered:<reason>, duplicates (claims)

A batch is stored in three steps, each pipelined per node: claim every eventId (and
register the partitions), run one store script per partition, then add the counters.
With `wait_replicas` > 0 each node's pipeline ends with WAIT on the same connection, so
`store_batch` returns only once the replicas have every write.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage.store import (
    DUPLICATE,
    EVICT_BASE,
    EVICT_PER_STORED,
    REDELIVERED,
    STORE_BATCH_LUA,
    BatchResult,
    Chain,
    Durability,
    Page,
    PageQuery,
    RedisEventStore,
    StoreRefused,
    _loads,
    _matches,
    event_blobs,
)
from shared.errors import Unavailable

log = logging.getLogger(__name__)

# Queues one command on a node's pipeline.
_Queue = Callable[[redis.client.Pipeline], object]

# Errors after which the client's slot table is stale (a failover, a resharding): refresh
# it, and let the worker retry the batch against the new owners.
_TOPOLOGY_ERRORS = (MovedError, AskError, ClusterDownError, TryAgainError)

# Threads that send the per-node pipelines of one step at once; a cluster with more
# masters than this queues the rest (still correct, only slower).
_NODE_THREADS = 16


class _StaleTopology(Unavailable):
    """A node did not answer or no longer owns a slot: refresh the slot table before the
    retry."""


CURSOR_PREFIX = "v1."
_CURSOR_BODY = re.compile(r"^[A-Za-z0-9_-]{1,8000}$")
_CURSOR_ENTRY = re.compile(r"^([0-9]{1,9}):([0-9]{1,18})$")


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


def encode_cursor(positions: Mapping[int, int]) -> str:
    """The opaque form of per-partition positions (the last seq read in each)."""
    text = ",".join(f"{p}:{s}" for p, s in sorted(positions.items()) if s > 0)
    return CURSOR_PREFIX + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> dict[int, int]:
    """Positions from a cursor `encode_cursor` made; ValueError for anything else."""
    if not token.startswith(CURSOR_PREFIX):
        raise ValueError("Not a valid cursor.")
    body = token[len(CURSOR_PREFIX) :]
    if body == "":
        return {}
    if not _CURSOR_BODY.match(body):
        raise ValueError("Not a valid cursor.")
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("Not a valid cursor.") from exc
    positions: dict[int, int] = {}
    for entry in text.split(",") if text else ():
        found = _CURSOR_ENTRY.match(entry)
        if found is None:
            raise ValueError("Not a valid cursor.")
        positions[int(found[1])] = int(found[2])
    if encode_cursor(positions) != token:  # one spelling per position vector
        raise ValueError("Not a valid cursor.")
    return positions


@dataclass
class _Head:
    """One partition's unread index entries during a page: (seq, eventId, body)."""

    key: str
    position: int
    rows: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    done: bool = False


class RedisClusterEventStore:
    """EventStore on a Redis Cluster. Raises `Unavailable` when a node does not answer
    or the slot table changed under a call (the caller retries), `StoreRefused` when a
    node refused a script; the cluster client is made on first use, so a cluster that
    is down at start is just unavailable."""

    max_in_flight = 1

    def __init__(
        self,
        url: str,
        prefix: str,
        dedup_ttl_seconds: int,
        *,
        retention_max_events: int = 0,
        retention_max_age_seconds: int = 0,
        timeout_seconds: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._dedup_ttl = dedup_ttl_seconds
        self._max_events = retention_max_events
        self._max_age = retention_max_age_seconds
        self._timeout = timeout_seconds
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._rc: RedisCluster | None = None
        self._sha: str | None = None
        self._pool: ThreadPoolExecutor | None = None

    # Keys -----------------------------------------------------------------------------

    def _tag(self, partition: int) -> str:
        return f"{{{self._prefix}:p{partition}}}"

    def _claim_key(self, event_id: str) -> str:
        return f"{self._prefix}:claim:{{{event_id}}}"

    def partition_key(self, partition: int, name: str) -> str:
        """Partition `partition`'s key `name` (`index`, `event:<eventId>`, `stats`, ...):
        the single-node layout under the partition's hash tag. For readers outside the
        store (the dashboard)."""
        return f"{self._tag(partition)}:{name}"

    @property
    def _partitions_key(self) -> str:
        return f"{{{self._prefix}:meta}}:partitions"

    @property
    def _meta_stats_key(self) -> str:
        return f"{{{self._prefix}:meta}}:stats"

    # Plumbing -------------------------------------------------------------------------

    def _cluster(self) -> RedisCluster:
        if self._rc is None:
            try:
                self._rc = RedisCluster.from_url(
                    self._url,
                    socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout,
                )
            except (redis.RedisError, RedisClusterException) as exc:
                raise Unavailable(f"Redis Cluster did not answer: {exc}") from exc
        return self._rc

    def _refresh(self) -> None:
        """Forget the slot table: the next call makes a new client, which asks the
        cluster again. (A new client rather than redis-py's re-initialisation, which
        drops the old nodes' connections without closing them.)"""
        if self._rc is not None:
            self._rc.close()
            self._rc = None

    def _on_nodes(self, commands: Sequence[tuple[str, _Queue]]) -> list[Any]:
        """Run each (key, queue-one-command) on the master of its key's slot: one pipeline
        per node (commands in the given order, ended with WAIT when asked for), the
        pipelines of different nodes sent at the same time. Returns the answers in input
        order once every node has answered. When any node failed, raises only after the
        others have finished too, so a retry never overlaps this attempt: StoreRefused for
        a refused command, else Unavailable."""
        rc = self._cluster()
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        try:
            for i, (key, _) in enumerate(commands):
                node = cast(Any, rc).get_node_from_key(key)
                by_node.setdefault(node.name, (node, []))[1].append(i)
        except (redis.RedisError, RedisClusterException) as exc:
            self._refresh()
            raise Unavailable(f"Redis Cluster has no node for a key: {exc}") from exc
        jobs = [
            (node, [commands[i][1] for i in indexes], indexes) for node, indexes in by_node.values()
        ]
        outcomes: list[list[Any] | Exception]
        if len(jobs) == 1:
            outcomes = [_outcome(self._pipeline_on, rc, jobs[0][0], jobs[0][1])]
        else:
            # Each node fsyncs its own pipeline before answering (appendfsync always): in
            # parallel a step costs the slowest node's round trip, not the sum of them.
            pool = self._executor()
            futures = [
                pool.submit(_outcome, self._pipeline_on, rc, node, queue) for node, queue, _ in jobs
            ]
            wait(futures)
            outcomes = [f.result() for f in futures]
        failures = [o for o in outcomes if isinstance(o, Exception)]
        if failures:
            if any(isinstance(f, _StaleTopology) for f in failures):
                self._refresh()
            refused = [f for f in failures if isinstance(f, StoreRefused)]
            raise (refused or failures)[0]
        answers: list[Any] = [None] * len(commands)
        for (_, _, indexes), got in zip(jobs, outcomes, strict=True):
            for i, answer in zip(indexes, cast("list[Any]", got), strict=True):
                answers[i] = answer
        return answers

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_NODE_THREADS, thread_name_prefix="redis-node")
        return self._pool

    def _pipeline_on(
        self, rc: RedisCluster, node: ClusterNode, queue: Sequence[_Queue]
    ) -> list[Any]:
        """One node's pipeline, run on a pool thread: touches no state of the store (the
        caller refreshes the slot table when this raises `_StaleTopology`)."""
        client = rc.get_redis_connection(node)
        for attempt in (1, 2):
            try:
                with client.pipeline(transaction=False) as pipe:
                    for add in queue:
                        add(pipe)
                    if self._wait_replicas:
                        cast(Any, pipe).execute_command(
                            "WAIT", self._wait_replicas, self._wait_timeout_ms
                        )
                    answers = pipe.execute(raise_on_error=False)
                if attempt == 1 and any(isinstance(a, NoScriptError) for a in answers):
                    # A node restarted or promoted since we loaded the script: load and
                    # redo (every command here is safe to repeat).
                    client.script_load(STORE_BATCH_LUA)
                    continue
            except (redis.RedisError, RedisClusterException) as exc:
                raise _StaleTopology(f"Redis node {node.name} did not answer: {exc}") from exc
            break
        if self._wait_replicas:
            acked = answers.pop()
            if isinstance(acked, Exception) or int(acked) < self._wait_replicas:
                raise Unavailable(
                    f"only {acked} replica(s) of {node.name} acknowledged the batch within "
                    f"{self._wait_timeout_ms} ms; {self._wait_replicas} required"
                )
        for answer in answers:
            if isinstance(answer, _TOPOLOGY_ERRORS):
                raise _StaleTopology(f"Redis Cluster moved a slot: {answer}")
            if isinstance(answer, redis.ResponseError):
                raise StoreRefused(
                    f"Redis node {node.name} refused to store the batch, which is retried "
                    f"until an operator fixes Redis: {answer}"
                )
            if isinstance(answer, Exception):
                raise Unavailable(f"Redis node {node.name} failed: {answer}")
        return answers

    # Writes ---------------------------------------------------------------------------

    def store_batch(
        self,
        events: Sequence[Accepted],
        processed_at: str,
        dead_lettered: Mapping[str, int] | None = None,
        chain: Chain | None = None,
    ) -> BatchResult:
        # Never given one: max_in_flight is 1. A batch spans several scripts on several
        # nodes here, so a per-writer check would have to span them too.
        assert chain is None, "the cluster store takes one batch at a time"
        dead = {reason: n for reason, n in (dead_lettered or {}).items() if n}
        if not events and not dead:
            return BatchResult((), (), ())
        owners = self._claim(events)
        codes: list[int] = [DUPLICATE] * len(events)
        by_partition: dict[int, list[int]] = {}
        for i, (ev, owner) in enumerate(zip(events, owners, strict=True)):
            if owner is None or owner == _origin(ev):
                by_partition.setdefault(ev.partition, []).append(i)
        self._store_partitions(events, by_partition, processed_at, codes)
        claimed_elsewhere = sum(
            1 for ev, owner in zip(events, owners, strict=True) if owner not in (None, _origin(ev))
        )
        counters = {f"deadLettered:{r}": n for r, n in dead.items()}
        if dead:
            counters["deadLettered"] = sum(dead.values())
        if claimed_elsewhere:
            counters["duplicates"] = claimed_elsewhere
        if counters:
            key = self._meta_stats_key
            adds: list[tuple[str, _Queue]] = []
            for name, n in counters.items():

                def add(pipe: redis.client.Pipeline, f: str = name, by: int = n) -> None:
                    pipe.hincrby(key, f, by)

                adds.append((key, add))
            self._on_nodes(adds)
        stored = tuple(ev for ev, c in zip(events, codes, strict=True) if c > 0)
        dupes = tuple(ev for ev, c in zip(events, codes, strict=True) if c == DUPLICATE)
        again = tuple(ev for ev, c in zip(events, codes, strict=True) if c == REDELIVERED)
        return BatchResult(stored, dupes, again)

    def _claim(self, events: Sequence[Accepted]) -> list[str | None]:
        """Claim each eventId for its record, and register the batch's partitions first
        (same pipelines). The owner's origin per event: None when this call claimed it."""
        partitions = sorted({ev.partition for ev in events})
        commands: list[tuple[str, _Queue]] = []
        if partitions:
            key = self._partitions_key
            commands.append((key, lambda pipe: pipe.sadd(key, *partitions)))
        for ev in events:
            ckey, origin = self._claim_key(ev.event_id), _origin(ev)

            def claim(pipe: redis.client.Pipeline, k: str = ckey, o: str = origin) -> None:
                pipe.set(k, o, nx=True, get=True, ex=self._dedup_ttl)

            commands.append((ckey, claim))
        answers = self._on_nodes(commands)[1 if partitions else 0 :]
        return [None if a is None else a.decode() for a in answers]

    def _store_partitions(
        self,
        events: Sequence[Accepted],
        by_partition: Mapping[int, Sequence[int]],
        processed_at: str,
        codes: list[int],
    ) -> None:
        """One store script per partition (STORE_BATCH_LUA under the partition's tag);
        fills `codes` for the events it was given."""
        if not by_partition:
            return
        if self._sha is None:
            self._sha = _sha1(STORE_BATCH_LUA)
        sha = self._sha
        commands: list[tuple[str, _Queue]] = []
        order: list[Sequence[int]] = []
        for partition, indexes in by_partition.items():
            tag = self._tag(partition)
            args = self._script_args(tag, [events[i] for i in indexes], processed_at)
            # The one declared key routes the call and lets Redis refuse it (MOVED) on a
            # node that no longer owns the slot; the script builds the rest from the tag.
            key = f"{tag}:seq"

            def run(pipe: redis.client.Pipeline, k: str = key, a: list[Any] = args) -> None:
                pipe.evalsha(sha, 1, k, *a)

            commands.append((key, run))
            order.append(indexes)
        for indexes, results in zip(order, self._on_nodes(commands), strict=True):
            for i, code in zip(indexes, results, strict=True):
                codes[i] = int(code)

    def _script_args(
        self, tag: str, events: Sequence[Accepted], processed_at: str
    ) -> list[str | bytes | int]:
        # STORE_BATCH_LUA's ARGV layout (store.py); dead letters are counted elsewhere.
        args: list[str | bytes | int] = [
            tag,
            self._dedup_ttl,
            self._max_events,
            self._max_age,
            EVICT_BASE,
            EVICT_PER_STORED,
            "",  # no writer: one batch at a time (max_in_flight)
            0,
            0,
            0,
        ]
        return [*args, *event_blobs(events, processed_at)]

    # Reads ----------------------------------------------------------------------------

    def _read(self, call: Callable[[RedisCluster], Any]) -> Any:
        try:
            return call(self._cluster())
        except (redis.RedisError, RedisClusterException) as exc:
            self._refresh()
            raise Unavailable(f"Redis Cluster did not answer: {exc}") from exc

    def read(self, call: Callable[[RedisCluster], Any]) -> Any:
        """`call` with the cluster client, for read-only views outside the store (the
        dashboard). Raises `Unavailable` (and forgets the slot table) when it fails."""
        return self._read(call)

    def partitions(self) -> list[int]:
        """The partitions that have stored (or are storing) events."""
        members = self._read(lambda rc: rc.smembers(self._partitions_key))
        return sorted(int(m) for m in cast("Iterable[bytes]", members))

    def get(self, event_id: str) -> dict[str, Any] | None:
        owner = self._read(lambda rc: rc.get(self._claim_key(event_id)))
        if owner is not None:
            partition = int(owner.decode().split(":", 1)[0])
            body = self._read(lambda rc: rc.get(f"{self._tag(partition)}:event:{event_id}"))
            if body is not None:
                return _loads(body)
        # No claim (older than the dedup window but kept by retention): ask everywhere.
        keys = [f"{self._tag(p)}:event:{event_id}" for p in self.partitions()]
        if not keys:
            return None
        for found in self._read(lambda rc: rc.mget_nonatomic(keys)):
            if found is not None:
                return _loads(found)
        return None

    def page(self, query: PageQuery, max_scan: int = 5000) -> Page:
        if isinstance(query.cursor, str):
            positions = decode_cursor(query.cursor)
        elif query.cursor == 0:
            positions = {}
        else:
            raise ValueError("Not a valid cursor.")
        if query.user_id is not None:
            suffix = f"user:{query.user_id}"
        elif query.event_type is not None:
            suffix = f"type:{query.event_type}"
        else:
            suffix = "index"
        parts = self.partitions()
        heads = {p: _Head(f"{self._tag(p)}:{suffix}", positions.get(p, 0)) for p in parts}
        events: list[dict[str, Any]] = []
        scanned = 0
        chunk = max(min(query.limit, max_scan), 50)
        # The heads of every partition, merged by (processedAt, partition, seq). Each
        # partition is read strictly in seq order and its position only moves past what
        # was read, so an event stored later lands after the cursor: never skipped.
        ready: list[tuple[str, int, int]] = []

        def push(p: int) -> None:
            head = heads[p]
            while not head.rows and not head.done:
                self._fetch(head, chunk)
            while head.rows and head.rows[0][2] is None:
                self._drop_stale(head)
            if head.rows:
                body = head.rows[0][2]
                assert body is not None
                ready.append((_processed_at(body), p, head.rows[0][0]))
            elif not head.done:
                push(p)

        for p in parts:
            push(p)
        heapq.heapify(ready)
        while ready and len(events) < query.limit and scanned < max_scan:
            _, p, _ = heapq.heappop(ready)
            head = heads[p]
            seq, _id, body = head.rows.pop(0)
            head.position = seq
            scanned += 1
            assert body is not None
            event = _loads(body)
            if _matches(event, query):
                events.append(event)
            before = len(ready)
            push(p)
            if len(ready) > before:
                heapq.heappush(ready, ready.pop())
        for head in heads.values():
            if not head.rows and not head.done:
                self._fetch(head, 1)
                while head.rows and head.rows[0][2] is None:
                    self._drop_stale(head)
        exhausted = all(not h.rows and h.done for h in heads.values())
        total = self._total(parts)
        if exhausted:
            return Page(events, total, None)
        return Page(events, total, encode_cursor({p: h.position for p, h in heads.items()}))

    def _fetch(self, head: _Head, count: int) -> None:
        after = head.rows[-1][0] if head.rows else head.position
        rows = cast(
            "list[tuple[bytes, float]]",
            self._read(
                lambda rc: rc.zrangebyscore(
                    head.key, f"({after}", "+inf", start=0, num=count, withscores=True
                )
            ),
        )
        if len(rows) < count:
            head.done = True
        if not rows:
            return
        tag = head.key[: head.key.index("}") + 1]
        ids = [m.decode() for m, _ in rows]
        bodies = cast(
            "list[bytes | None]",
            self._read(lambda rc: rc.mget([f"{tag}:event:{i}" for i in ids])),
        )
        head.rows += [(int(s), i, b) for (_, s), i, b in zip(rows, ids, bodies, strict=True)]

    def _drop_stale(self, head: _Head) -> None:
        # Left behind by retention; dropped here so the next reader skips less.
        seq, event_id, _ = head.rows.pop(0)
        head.position = seq
        self._read(lambda rc: rc.zrem(head.key, event_id))

    def _total(self, parts: Sequence[int]) -> int:
        def count(rc: RedisCluster) -> int:
            with cast(Any, rc).pipeline() as pipe:
                for p in parts:
                    pipe.zcard(f"{self._tag(p)}:index")
                return sum(int(n) for n in pipe.execute())

        return int(self._read(count)) if parts else 0

    def stats(self) -> dict[str, Any]:
        parts = self.partitions()

        def read(rc: RedisCluster) -> tuple[list[dict[bytes, bytes]], int]:
            with cast(Any, rc).pipeline() as pipe:
                pipe.hgetall(self._meta_stats_key)
                for p in parts:
                    pipe.hgetall(f"{self._tag(p)}:stats")
                for p in parts:
                    pipe.zcard(f"{self._tag(p)}:index")
                got = pipe.execute()
            return got[: 1 + len(parts)], sum(int(n) for n in got[1 + len(parts) :])

        hashes, stored = self._read(read)
        fields: dict[str, int] = {}
        for raw in hashes:
            for k, v in raw.items():
                name = k.decode()
                fields[name] = fields.get(name, 0) + int(v)
        return {
            "processed": fields.get("processed", 0),
            "duplicatesSkipped": fields.get("duplicates", 0),
            "deadLettered": fields.get("deadLettered", 0),
            "deadLetteredByReason": {
                k.split(":", 1)[1]: v
                for k, v in sorted(fields.items())
                if k.startswith("deadLettered:")
            },
            "stored": stored,
            "byEventType": {
                k.split(":", 1)[1]: v for k, v in sorted(fields.items()) if k.startswith("type:")
            },
        }

    def ping(self) -> bool:
        try:
            return bool(self._cluster().ping(target_nodes=RedisCluster.PRIMARIES))
        except (Unavailable, redis.RedisError, RedisClusterException):
            self._refresh()
            return False

    def durability(self) -> Durability:
        """The persistence and eviction settings of every node (a replica becomes a
        master on failover): the first node short of production's, else the common
        answer. Never raises."""
        try:
            nodes = cast(Any, self._cluster()).get_nodes()
            answers = []
            for node in nodes:
                client = self._cluster().get_redis_connection(node)
                found = client.config_get("appendonly")
                found.update(client.config_get("appendfsync"))
                found.update(client.config_get("maxmemory-policy"))
                answers.append(
                    Durability(
                        _text(found.get("appendonly")),
                        _text(found.get("appendfsync")),
                        _text(found.get("maxmemory-policy")),
                    )
                )
        except (Unavailable, redis.RedisError, RedisClusterException) as exc:
            return Durability(None, None, problem=f"{type(exc).__name__}: {exc}")
        for answer in answers:
            if not (answer.fsync_always and answer.never_evicts):
                return answer
        return answers[0] if answers else Durability(None, None, problem="no nodes")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._rc is not None:
            self._rc.close()
            self._rc = None


def _outcome(
    call: Callable[[RedisCluster, ClusterNode, Sequence[_Queue]], list[Any]],
    rc: RedisCluster,
    node: ClusterNode,
    queue: Sequence[_Queue],
) -> list[Any] | Exception:
    # A node's failure as a value: the caller decides only once every node is done.
    try:
        return call(rc, node, queue)
    except Unavailable as exc:
        return exc


def _origin(ev: Accepted) -> str:
    return f"{ev.partition}:{ev.offset}"


def _processed_at(body: bytes) -> str:
    return str(_loads(body).get("processedAt", ""))


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").lower()
    return None if value is None else str(value).lower()


def _sha1(script: str) -> str:
    # Redis names a script by the SHA-1 of its text.
    return hashlib.sha1(script.encode()).hexdigest()


def redis_mode(settings: ConsumerSettings, timeout_seconds: float) -> str:
    """ "cluster" or "single": what REDIS_URL is, for every reader and writer of the store.
    CONSUMER_REDIS_MODE when it says which (nothing is asked), else (auto) the node's own
    answer to INFO cluster. Raises `Unavailable` when auto and the node does not answer."""
    if settings.redis_mode != "auto":
        return settings.redis_mode
    return "cluster" if is_cluster(settings.common.redis_url, timeout_seconds) else "single"


def open_store(
    settings: ConsumerSettings, *, timeout_seconds: float, writer: bool
) -> RedisEventStore | RedisClusterEventStore:
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
            **retention,
        )
    return RedisEventStore.from_url(
        url,
        settings.redis_prefix,
        settings.dedup_ttl_seconds,
        timeout_seconds=timeout_seconds,
        **retention,
    )

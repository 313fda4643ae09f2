"""Where processed events live when Redis is a Cluster: the `EventStore` contract with
every atomic step inside one hash slot. The design, the key layout (keys.py) and what
each failover setting protects are in docs/scaling.md.

A batch is stored in three steps, each pipelined per node: claim every eventId (and
register the partitions), run one store script per partition, then add the counters.
With `wait_replicas` > 0 each node's pipeline ends with WAIT on the same connection, so
`store_batch` returns only once the replicas have every write.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from consumer_service.pipeline.processing import Accepted
from consumer_service.storage.base import (
    ERASURE_TTL_SECONDS,
    MAX_PAGE_BYTES,
    MAX_SCAN,
    BatchResult,
    Chain,
    Page,
    PageQuery,
    RedisStore,
    Run,
    decode_event,
)
from consumer_service.storage.cluster_nodes import ClusterNodes, Queue
from consumer_service.storage.cluster_page import PartitionMerge, cursor_positions, decode_cursor
from consumer_service.storage.durability import Durability, read_durability
from consumer_service.storage.erase import (
    ERASE_USER_LUA,
    Erasure,
    Position,
    erase_args,
    erase_until_done,
)
from consumer_service.storage.keys import (
    ClusterKeyLayout,
    KeyLayout,
    data_key,
    data_key_erasures,
)
from consumer_service.storage.script import DUPLICATE, STORE_BATCH_SHA
from shared.errors import Unavailable


class RedisClusterEventStore(RedisStore):
    """EventStore on a Redis Cluster. Raises `Unavailable` when a node does not answer
    or the slot table changed under a call (the caller retries), `StoreRefused` when a
    node refused a script; the cluster client is made on first use, so a cluster that
    is down at start is just unavailable."""

    max_in_flight = 1
    # The cursor is a vector of per-partition positions (docs/scaling.md).
    opaque_cursor = True

    def __init__(
        self,
        url: str,
        prefix: str,
        dedup_ttl_seconds: int,
        *,
        retention_max_events: int = 0,
        retention_max_age_seconds: int = 0,
        erasure_ttl_seconds: int = ERASURE_TTL_SECONDS,
        timeout_seconds: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        topic_partitions: int = 0,
    ) -> None:
        super().__init__(
            prefix,
            dedup_ttl_seconds,
            retention_max_events,
            retention_max_age_seconds,
            erasure_ttl_seconds,
        )
        self._nodes = ClusterNodes(url, timeout_seconds, wait_replicas, wait_timeout_ms)
        self.keys = ClusterKeyLayout(prefix)
        # Partitions an erasure records itself in even before they hold data.
        self._topic_partitions = topic_partitions

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
        self._count(counters)
        return BatchResult.from_codes(events, codes)

    def _claim(self, events: Sequence[Accepted]) -> list[str | None]:
        """Claim each eventId for its record, and register the batch's partitions first
        (same pipelines). The owner's origin per event: None when this call claimed it."""
        partitions = sorted({ev.partition for ev in events})
        commands: list[tuple[str, Queue]] = []
        if partitions:
            key = self.keys.partitions
            commands.append((key, lambda pipe: pipe.sadd(key, *partitions)))
        for ev in events:
            ckey, origin = self.keys.claim(ev.event_id), _origin(ev)

            def claim(pipe: redis.client.Pipeline, k: str = ckey, o: str = origin) -> None:
                pipe.set(k, o, nx=True, get=True, ex=self._dedup_ttl)

            commands.append((ckey, claim))
        answers = self._nodes.on_nodes(commands)[1 if partitions else 0 :]
        return [None if a is None else a.decode() for a in answers]

    def _store_partitions(
        self,
        events: Sequence[Accepted],
        by_partition: Mapping[int, Sequence[int]],
        processed_at: str,
        codes: list[int],
    ) -> None:
        """One store script per partition (under the partition's tag); fills `codes` for
        the events it was given."""
        if not by_partition:
            return
        commands: list[tuple[str, Queue]] = []
        order: list[Sequence[int]] = []
        for partition, indexes in by_partition.items():
            tag = self.keys.partition(partition)
            # Dead letters are counted in the meta stats, and no writer is named: one
            # batch at a time (max_in_flight).
            args = self._script_args(
                tag.prefix, [events[i] for i in indexes], processed_at, {}, None
            )
            # The one declared key routes the call and lets Redis refuse it (MOVED) on a
            # node that no longer owns the slot; the script builds the rest from the tag.
            key = tag.seq

            def run(pipe: redis.client.Pipeline, k: str = key, a: list[Any] = args) -> None:
                pipe.evalsha(STORE_BATCH_SHA, 1, k, *a)

            commands.append((key, run))
            order.append(indexes)
        for indexes, results in zip(order, self._nodes.on_nodes(commands), strict=True):
            for i, code in zip(indexes, results, strict=True):
                codes[i] = int(code)

    def _count(self, counters: Mapping[str, int]) -> None:
        """Add `counters` to the meta stats hash."""
        if not counters:
            return
        key = self.keys.meta_stats
        adds: list[tuple[str, Queue]] = []
        for name, n in counters.items():

            def add(pipe: redis.client.Pipeline, f: str = name, by: int = n) -> None:
                pipe.hincrby(key, f, by)

            adds.append((key, add))
        self._nodes.on_nodes(adds)

    def erase_user(self, user_id: str) -> Erasure:
        # The payload data key has a slot of its own: deleted before the events, so the
        # user's payloads anywhere are unreadable even if an erase step below fails; the
        # counter then tells every process to drop its cached keys.
        name = data_key(self.keys.prefix, user_id)
        (deleted,) = self._nodes.on_nodes([(name, lambda pipe: pipe.delete(name))])
        if deleted:
            counter = data_key_erasures(self.keys.prefix)
            self._nodes.on_nodes([(counter, lambda pipe: pipe.incr(counter))])
        # Every partition gets the record, not only the one the user's events are in: a
        # replay after a partition count change may bring them to another. Those of the
        # topic (KAFKA_TOPIC_PARTITIONS) too, data or not, and any registered beyond them.
        total, cutoff_ms = 0, None
        for partition in sorted({*self.partitions(), *range(self._topic_partitions)}):
            tag = self.keys.partition(partition)
            step = functools.partial(self._erase_step, tag, user_id)
            done = erase_until_done(step, cutoff_ms)
            total, cutoff_ms = total + done.deleted, done.cutoff_ms
        if cutoff_ms is None:
            # Nothing stored yet: no partition to record it in, and nothing to erase.
            return Erasure(0, self._now_ms())
        return Erasure(total, cutoff_ms)

    def _now_ms(self) -> int:
        seconds, micros = self._nodes.read(lambda rc: rc.time())
        return int(seconds) * 1000 + int(micros) // 1000

    def _erase_step(self, tag: KeyLayout, user_id: str, position: Position) -> list[Any]:
        """One erase script call in partition `tag`, routed by its P:seq."""
        key = tag.seq
        args = erase_args(tag.prefix, user_id, position, self._erasure_ttl)

        def run(pipe: redis.client.Pipeline) -> None:
            # EVAL, not EVALSHA: erasing is rare, and the text costs nothing next to it.
            pipe.eval(ERASE_USER_LUA, 1, key, *args)

        return cast("list[Any]", self._nodes.on_nodes([(key, run)])[0])

    # Reads ----------------------------------------------------------------------------

    def read(self, call: Callable[[RedisCluster], Any]) -> Any:
        """`call` with the cluster client, for read-only views outside the store (the
        dashboard). Raises `Unavailable` (and forgets the slot table) when it fails."""
        return self._nodes.read(call)

    def partitions(self) -> list[int]:
        """The partitions that have stored (or are storing) events."""
        members = self._nodes.read(lambda rc: rc.smembers(self.keys.partitions))
        return sorted(int(m) for m in cast("Iterable[bytes]", members))

    def get(self, event_id: str) -> dict[str, Any] | None:
        owner = self._nodes.read(lambda rc: rc.get(self.keys.claim(event_id)))
        if owner is not None:
            partition = int(owner.decode().split(":", 1)[0])
            key = self.keys.partition(partition).event(event_id)
            body = self._nodes.read(lambda rc: rc.get(key))
            if body is not None:
                return decode_event(body)
        # No claim (older than the dedup window but kept by retention): ask everywhere.
        keys = [self.keys.partition(p).event(event_id) for p in self.partitions()]
        if not keys:
            return None
        for found in self._nodes.read(lambda rc: rc.mget_nonatomic(keys)):
            if found is not None:
                return decode_event(found)
        return None

    def parse_cursor(self, token: str) -> str:
        decode_cursor(token)
        return token

    def page(
        self, query: PageQuery, max_scan: int = MAX_SCAN, max_bytes: int = MAX_PAGE_BYTES
    ) -> Page:
        positions = cursor_positions(query.cursor)
        parts = self.partitions()
        merge = PartitionMerge(self._nodes, self.keys, parts, positions, query, max_scan, max_bytes)
        events, next_cursor = merge.read()
        return Page(events, self._total(parts), next_cursor)

    def _total(self, parts: Sequence[int]) -> int:
        def count(rc: RedisCluster) -> int:
            with cast(Any, rc).pipeline() as pipe:
                for p in parts:
                    pipe.zcard(self.keys.partition(p).index)
                return sum(int(n) for n in pipe.execute())

        return int(self._nodes.read(count)) if parts else 0

    def stats(self) -> dict[str, Any]:
        parts = self.partitions()

        def read(rc: RedisCluster) -> tuple[list[dict[bytes, bytes]], int]:
            with cast(Any, rc).pipeline() as pipe:
                pipe.hgetall(self.keys.meta_stats)
                for p in parts:
                    pipe.hgetall(self.keys.partition(p).stats)
                for p in parts:
                    pipe.zcard(self.keys.partition(p).index)
                got = pipe.execute()
            return got[: 1 + len(parts)], sum(int(n) for n in got[1 + len(parts) :])

        hashes, stored = self._nodes.read(read)
        fields: dict[str, int] = {}
        for raw in hashes:
            for k, v in raw.items():
                name = k.decode()
                fields[name] = fields.get(name, 0) + int(v)
        return self._totals(fields, stored)

    def ping(self) -> bool:
        try:
            return bool(self._nodes.client().ping(target_nodes=RedisCluster.PRIMARIES))
        except (Unavailable, redis.RedisError, RedisClusterException):
            self._nodes.refresh()
            return False

    def durability(self) -> Durability:
        """The persistence and eviction settings of every node (a replica becomes a
        master on failover): the first node short of production's, else the common
        answer. Never raises."""
        try:
            rc = self._nodes.client()
            answers = [
                read_durability(rc.get_redis_connection(node)) for node in cast(Any, rc).get_nodes()
            ]
        except (Unavailable, redis.RedisError, RedisClusterException) as exc:
            return Durability(None, None, problem=f"{type(exc).__name__}: {exc}")
        for answer in answers:
            if not answer.safe:
                return answer
        return answers[0] if answers else Durability(None, None, problem="no nodes")

    def close(self) -> None:
        self._nodes.close()

    def layouts(self) -> list[tuple[Run, KeyLayout]]:
        return [(self._nodes.read, self.keys.partition(p)) for p in self.partitions()]


def _origin(ev: Accepted) -> str:
    return f"{ev.partition}:{ev.offset}"

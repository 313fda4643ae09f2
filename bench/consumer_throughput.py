"""Consumer figures of `make bench`: `consumer-service` processes draining a pre-filled topic.

1. A fresh topic (6 partitions) is filled with N records keyed by user, 5% of them copies
   of an earlier record (same eventId, re-published): duplicates the worker must skip.
2. Baselines read the same topic: Kafka's ConsumerPerformance and a bare confluent-kafka
   consume loop. A raw pipelined Redis loop makes the store step's writes.
3. For each replica count, a topic filled the same way but in one Kafka transaction left
   open, and that many `consumer-service` processes (read API off; their per-event log
   lines written to /dev/null) on a new group and Redis prefix. Once every replica holds
   partitions the transaction is committed and the clock starts: the whole topic becomes
   readable at once to the settled group. It stops when Redis counts every record as
   stored or skipped as a duplicate. The stored and duplicate counts must then be
   exactly the topic's.
4. The same for one replica with payload encryption on: the topic's payloads sealed as
   the producer seals them, the users' data keys in the store's Redis; the worker opens
   every payload before storing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench import baselines
from bench.common import (
    BenchRedis,
    Fill,
    Service,
    admin_client,
    create_topics,
    delete_topics,
    encryption_env,
    fill_topic,
    pipeline_counts,
    progress,
    sealer,
    stop_all,
)


def group_ready(admin: AdminClient, group: str, members: int) -> bool:
    """True when `group` has `members` members and every one of them holds partitions."""
    try:
        described = admin.describe_consumer_groups([group], request_timeout=2)[group].result()
    except Exception:  # a group the coordinator does not know yet, a slow answer: not ready
        return False
    held = [m for m in described.members if m.assignment and m.assignment.topic_partitions]
    return len(described.members) == members and len(held) == members


@dataclass(frozen=True)
class Drained:
    """What one drain measured: `measured` records handled in `seconds` on the clock, and
    the final (processed, duplicates) counts."""

    replicas: int
    total: int
    measured: int
    seconds: float
    from_first_record: bool
    processed: int
    duplicates: int

    @property
    def events_per_second(self) -> float:
        return self.measured / self.seconds

    def figures(self, fill: Fill) -> dict[str, Any]:
        """The result fields every drain reports; `counts_correct` holds when the counts
        are exactly the topic's."""
        eps = self.events_per_second
        return {
            "replicas": self.replicas,
            "events": self.total,
            "events_measured": self.measured,
            "clock_from": (
                "first stored record"
                if self.from_first_record
                else "topic released to the settled group"
                if fill.release is not None
                else "group stable"
            ),
            "seconds": round(self.seconds, 3),
            "events_per_second": round(eps),
            "events_per_second_per_replica": round(eps / self.replicas),
            "stored": self.processed,
            "duplicates_skipped": self.duplicates,
            "counts_correct": (
                self.processed == fill.unique and self.duplicates == fill.duplicates
            ),
        }


def timed_drain(
    bootstrap: str,
    topic: str,
    group: str,
    env: Mapping[str, str],
    counts: Callable[[], tuple[int, int]],
    total: int,
    replicas: int,
    log_dir: Path | None,
    *,
    name: str,
    what: str,
    timeout: float,
    poll_seconds: float,
    on_clock_start: Callable[[], None] = lambda: None,
    on_clock_stop: Callable[[], None] = lambda: None,
    release: Callable[[], None] | None = None,
) -> Drained:
    """Start `replicas` consumer-service processes (`name`-0, -1, ...; read API off, `env`
    on top) on `group`, and stop them once `counts()` (processed, duplicates) covers
    `total` records. The clock starts when every replica holds partitions and a record is
    stored; `on_clock_start` is called each time that start is (re)set and `on_clock_stop`
    when the clock stops (before the replicas are stopped), so that a caller can take its
    own readings at the same instants. Raises SystemExit when a replica exits
    or `timeout` seconds pass (`what` names the drain in that message).

    `release` (a held fill's, see `fill_topic`): called once every replica holds
    partitions, and the clock starts then, so that every record is drained by the whole
    group. Without it the records are readable from the start, and the clock starts at
    the first record stored after the group settled: with several replicas, what was
    drained before is not counted."""
    base_env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_CONSUMER_GROUP": group,
        "CONSUMER_API_ENABLED": "false",
    }
    services = [
        Service.start(f"{name}-{i}", "consumer-service", {**base_env, **env}, None, log_dir)
        for i in range(replicas)
    ]
    admin = admin_client(bootstrap)
    try:
        deadline = time.monotonic() + timeout
        ready = False
        started_at: float | None = None
        done_at_start = 0
        first_record_at: float | None = None
        last_note = time.monotonic()
        next_group_check = 0.0
        while True:
            now = time.monotonic()
            processed, duplicates = counts()
            done = processed + duplicates
            if done and first_record_at is None:
                first_record_at = now
                if release is None:  # a released topic's clock started at the release
                    on_clock_start()
            if not ready and now >= next_group_check:
                ready = group_ready(admin, group, replicas)
                next_group_check = now + 0.1
            if release is not None and ready and started_at is None:
                release()
                started_at, done_at_start = time.monotonic(), done
                on_clock_start()
            # A group that settles in the poll that sees the last record would start the
            # clock with nothing left to count: the first stored record is the start then.
            if release is None and started_at is None and ready and done and done < total:
                started_at, done_at_start = now, done
                on_clock_start()
            if done >= total:
                finished_at = now
                on_clock_stop()
                break
            for s in services:
                if not s.alive():
                    raise SystemExit(f"{s.name} exited with {s.proc.returncode}")
            if now > deadline:
                raise SystemExit(f"{what}: {done} of {total} in {timeout:.0f} s")
            if now - last_note > 5:
                progress(f"  {done:,} of {total:,} records handled")
                last_note = now
            time.sleep(poll_seconds)
    finally:
        stop_all(services)
    # With tiny sizes the replicas may finish before the group settles: then the clock
    # runs from the first stored record, and the result says so.
    from_first_record = started_at is None
    if started_at is None:
        assert first_record_at is not None
        started_at, done_at_start = first_record_at, 0
    return Drained(
        replicas=replicas,
        total=total,
        measured=total - done_at_start,
        seconds=max(finished_at - started_at, 1e-3),
        from_first_record=from_first_record,
        processed=processed,
        duplicates=duplicates,
    )


def drain(
    bootstrap: str,
    topic: str,
    group: str,
    prefix: str,
    store: BenchRedis,
    fill: Fill,
    replicas: int,
    log_dir: Path | None,
) -> dict[str, Any]:
    drained = timed_drain(
        bootstrap,
        topic,
        group,
        {"REDIS_URL": store.url, "CONSUMER_REDIS_PREFIX": prefix},
        lambda: pipeline_counts(store.client, prefix),
        fill.records,
        replicas,
        log_dir,
        name=f"consumer-{replicas}r",
        what=f"{replicas} replica(s)",
        timeout=120 + fill.records / 500,
        poll_seconds=0.01,
        release=fill.release,
    )
    return drained.figures(fill)


def encrypted_drain(
    bootstrap: str,
    run_id: str,
    store: BenchRedis,
    events: int,
    duplicate_share: float,
    log_dir: Path | None,
) -> dict[str, Any]:
    """One replica draining a topic of sealed payloads (step 4 of the module's list)."""
    own = f"bench-{run_id}-consumer-enc"
    prefix = f"bench:{run_id}:cenc"
    env = encryption_env(prefix)
    create_topics(bootstrap, [own, f"{own}.dlq"])
    try:
        progress(f"filling {own} with {events:,} records, payloads encrypted, held")
        held = fill_topic(
            bootstrap, own, events, duplicate_share, held=True, seal=sealer(store, prefix, env)
        )
        progress(f"consumer-service x1, payloads encrypted: {events:,} records to Redis")
        drained = timed_drain(
            bootstrap,
            own,
            f"bench-{run_id}-cenc",
            {"REDIS_URL": store.url, "CONSUMER_REDIS_PREFIX": prefix, **env},
            lambda: pipeline_counts(store.client, prefix),
            held.records,
            1,
            log_dir,
            name="consumer-encrypted",
            what="1 replica, payloads encrypted",
            timeout=120 + held.records / 500,
            poll_seconds=0.01,
            release=held.release,
        )
        return drained.figures(held)
    finally:
        store.delete_prefix(prefix)
        delete_topics(bootstrap, [own, f"{own}.dlq"])


def run(
    bootstrap: str,
    run_id: str,
    store: BenchRedis,
    *,
    events: int,
    duplicate_share: float,
    replica_counts: Sequence[int],
    log_dir: Path | None,
) -> dict[str, Any]:
    topic = f"bench-{run_id}-consumer"
    create_topics(bootstrap, [topic, f"{topic}.dlq"])
    try:
        progress(f"filling {topic} with {events:,} records ({duplicate_share:.0%} duplicates)")
        fill = fill_topic(bootstrap, topic, events, duplicate_share)
        progress(f"baseline: Kafka ConsumerPerformance, {events:,} records")
        cperf = baselines.consumer_performance(bootstrap, topic, events)
        progress(f"baseline: bare confluent-kafka consume loop, {events:,} records")
        bare = baselines.consume_throughput(bootstrap, topic, events)
        progress(f"baseline: raw pipelined Redis store loop, {events:,} events")
        loop_prefix = f"bench:{run_id}:redisloop"
        try:
            redis_loop = baselines.redis_store_loop(store.url, loop_prefix, events)
        finally:
            store.delete_prefix(loop_prefix)
        workers = []
        for replicas in replica_counts:
            # Its own topic, filled the same way in a transaction held open until every
            # replica holds partitions: with the broker's group.initial.rebalance.delay.ms
            # at 0, the first replica would otherwise drain much of a shared, readable
            # topic alone while the others join.
            own = f"{topic}-x{replicas}"
            create_topics(bootstrap, [own, f"{own}.dlq"])
            prefix = f"bench:{run_id}:c{replicas}"
            try:
                progress(f"filling {own} with {events:,} records, held until the group settled")
                held = fill_topic(bootstrap, own, events, duplicate_share, held=True)
                progress(f"consumer-service x{replicas}: {events:,} records to Redis")
                workers.append(
                    drain(
                        bootstrap,
                        own,
                        f"bench-{run_id}-c{replicas}",
                        prefix,
                        store,
                        held,
                        replicas,
                        log_dir,
                    )
                )
            finally:
                store.delete_prefix(prefix)
                delete_topics(bootstrap, [own, f"{own}.dlq"])
        encrypted = encrypted_drain(bootstrap, run_id, store, events, duplicate_share, log_dir)
    finally:
        delete_topics(bootstrap, [topic, f"{topic}.dlq"])
    return {
        "encrypted": encrypted,
        "topic_records": fill.records,
        "unique_events": fill.unique,
        "duplicates": fill.duplicates,
        "record_bytes": round(fill.bytes_per_record),
        "fill_seconds": round(fill.seconds, 2),
        "redis": store.fsync_policy(),
        "workers": workers,
        "consumer_performance": cperf,
        "baseline_consume": bare,
        "redis_store_loop": redis_loop,
    }

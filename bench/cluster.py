"""Cluster figures of `make bench-cluster` (`bench.report --only cluster`): the consumer
measurement of bench/consumer_throughput.py, stored into a private local Redis Cluster.

One topic (6 partitions) is filled with N records, 5% of them duplicates, and drained by
real `consumer-service` processes, each variant on its own group and key prefix:

  single node       1 replica into the bench's single Redis: the same-run baseline
  3 masters         1 and 2 replicas into a cluster of 3 masters + 3 replicas (the test
                    harness, tests/clusterharness.py: AOF, appendfsync always)
  3 masters, WAIT 1 1 replica, CONSUMER_REDIS_WAIT_REPLICAS=1
  1 partition       1 replica draining a topic of 1 partition (N records): a partition's
                    ceiling, since one replica at a time consumes a partition
  one shard         1 and 2 replicas into a cluster of one master (all 16,384 slots) and
                    its replica: what one shard takes

The clock runs as in consumer_throughput.drain; the stored and duplicate counts must be
exactly the topic's. For every cluster variant each master's CPU seconds over the clock
are read from /proc: `busy` is its share of one core, and `ceiling` = events/s / busy
(the rate at which that master's CPU would be full; fsync waits are not CPU, so it is an
upper bound).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.common import (
    BenchRedis,
    Fill,
    delete_topics,
    fill_topic,
    pipeline_counts,
    progress,
)
from bench.consumer_throughput import timed_drain
from consumer_service.storage import RedisClusterEventStore
from consumer_service.storage.keys import ClusterKeyLayout
from infra.topics import ensure_topics
from tests.clusterharness import LocalRedisCluster, Node, free_cluster_ports

CLOCK_TICKS = 100  # /proc/<pid>/stat counts CPU time in USER_HZ, 100 on Linux


def one_shard_cluster(root: Path) -> LocalRedisCluster:
    """A cluster of one master holding every slot and one replica of it. `redis-cli
    --cluster create` wants three masters, so the slots and the replica are set by hand."""
    cluster = LocalRedisCluster(root)
    cluster.nodes = [Node(port, root / str(port)) for port in free_cluster_ports(2)]
    for node in cluster.nodes:
        node.start(cluster.node_timeout_ms)
    _wait(lambda: all(n.answers() for n in cluster.nodes), 15, "nodes answer")
    master, replica = (n.client() for n in cluster.nodes)
    try:
        master.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        replica.execute_command("CLUSTER", "MEET", "127.0.0.1", cluster.nodes[0].port)
        master_id = master.execute_command("CLUSTER", "MYID")
        master_id = master_id.decode() if isinstance(master_id, bytes) else str(master_id)
        _wait(lambda: _knows(replica, master_id), 15, "replica meets the master")
        replica.execute_command("CLUSTER", "REPLICATE", master_id)
    finally:
        master.close()
        replica.close()
    _wait(cluster.healthy, 30, "one-shard cluster ok, replica linked")
    return cluster


def _knows(client: Any, node_id: str) -> bool:
    nodes = client.execute_command("CLUSTER", "NODES")
    return node_id in (nodes.decode() if isinstance(nodes, bytes) else str(nodes))


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster bench: timed out after {timeout:.0f} s: {what}")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def masters(cluster: LocalRedisCluster) -> list[Node]:
    return [n for n in cluster.nodes if n.proc is not None and n.role() == "master"]


def drain(
    bootstrap: str,
    topic: str,
    group: str,
    env: Mapping[str, str],
    counts: Callable[[], tuple[int, int]],
    fill: Fill,
    replicas: int,
    watched: Mapping[str, int],
    log_dir: Path | None,
    name: str,
) -> dict[str, Any]:
    """`replicas` consumer-service processes drain `topic` until `counts()` (processed,
    duplicates) covers every record. `watched` names processes (Redis masters) whose CPU
    seconds over the clock are reported."""
    cpu_at_start: dict[str, float] = {}
    cpu_used: dict[str, float] = {}

    def read_cpu_at_start() -> None:
        cpu_at_start.update({k: cpu_seconds(pid) for k, pid in watched.items()})

    def read_cpu_used() -> None:
        cpu_used.update({k: cpu_seconds(pid) - cpu_at_start[k] for k, pid in watched.items()})

    drained = timed_drain(
        bootstrap,
        topic,
        group,
        env,
        counts,
        fill.records,
        replicas,
        log_dir,
        name=name,
        what=name,
        timeout=120 + fill.records / 300,
        poll_seconds=0.02,
        on_clock_start=read_cpu_at_start,
        on_clock_stop=read_cpu_used,
        release=fill.release,
    )
    eps = drained.events_per_second
    busy = {k: round(cpu / drained.seconds, 3) for k, cpu in cpu_used.items()}
    return {
        "variant": name,
        **drained.figures(fill),
        "master_busy": busy,
        "master_ceiling_events_per_second": {
            k: round(eps / b) if b > 0 else None for k, b in busy.items()
        },
    }


class ClusterCounts:
    """(processed, duplicates) of a cluster prefix, summed over its partitions and meta
    (the read API's /stats, read directly)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._reader = RedisClusterEventStore(url, prefix, 0, timeout_seconds=5.0)

    def __call__(self) -> tuple[int, int]:
        stats = self._reader.stats()
        return int(stats["processed"]), int(stats["duplicatesSkipped"])

    def close(self) -> None:
        self._reader.close()


def delete_cluster_prefix(cluster: LocalRedisCluster, prefix: str) -> None:
    for node in masters(cluster):
        client = node.client(10.0)
        try:
            for pattern in ClusterKeyLayout(prefix).patterns:
                keys = list(client.scan_iter(match=pattern, count=10_000))
                # One key per command: a node refuses a multi-key UNLINK across slots.
                for i in range(0, len(keys), 10_000):
                    with client.pipeline(transaction=False) as pipe:
                        for key in keys[i : i + 10_000]:
                            pipe.unlink(key)
                        pipe.execute()
        finally:
            client.close()


def on_cluster(
    bootstrap: str,
    run_id: str,
    cluster: LocalRedisCluster,
    label: str,
    topic: str,
    fill: Fill,
    replicas: int,
    log_dir: Path | None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    prefix = f"bench:{run_id}:{label}"
    progress(f"cluster: {label}, consumer-service x{replicas}, {fill.records:,} records")
    counts = ClusterCounts(cluster.url, prefix)
    watched = {f"127.0.0.1:{n.port}": n.proc.pid for n in masters(cluster) if n.proc}
    try:
        result = drain(
            bootstrap,
            topic,
            f"bench-{run_id}-{label}",
            {
                "REDIS_URL": cluster.url,
                "CONSUMER_REDIS_MODE": "cluster",
                "CONSUMER_REDIS_PREFIX": prefix,
                **(extra_env or {}),
            },
            counts,
            fill,
            replicas,
            watched,
            log_dir,
            label,
        )
    finally:
        counts.close()
        delete_cluster_prefix(cluster, prefix)
    result["masters"] = len(watched)
    return result


def one_and_two_replicas(
    bootstrap: str,
    run_id: str,
    cluster: LocalRedisCluster,
    label: str,
    topic: str,
    fill: Fill,
    log_dir: Path | None,
) -> list[dict[str, Any]]:
    """The variants `label x1` and `label x2`, in that order. `x2` drains its own copy of
    the topic, held until both replicas hold partitions (see consumer_throughput.run)."""
    one = on_cluster(bootstrap, run_id, cluster, f"{label} x1", topic, fill, 1, log_dir)
    own = f"{topic}-{label.replace(' ', '')}-x2"
    ensure_topics(bootstrap, [own, f"{own}.dlq"], 6)
    try:
        share = fill.duplicates / fill.records if fill.records else 0.0
        held = fill_topic(bootstrap, own, fill.records, share, held=True)
        two = on_cluster(bootstrap, run_id, cluster, f"{label} x2", own, held, 2, log_dir)
    finally:
        delete_topics(bootstrap, [own, f"{own}.dlq"])
    return [one, two]


def run(
    bootstrap: str,
    run_id: str,
    store: BenchRedis,
    *,
    events: int,
    duplicate_share: float,
    log_dir: Path | None,
) -> dict[str, Any]:
    topic = f"bench-{run_id}-cluster"
    one = f"bench-{run_id}-cluster1p"
    topics = [topic, f"{topic}.dlq", one, f"{one}.dlq"]
    ensure_topics(bootstrap, [topic, f"{topic}.dlq"], 6)
    ensure_topics(bootstrap, [one, f"{one}.dlq"], 1)
    variants: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        progress(f"filling {topic} (6 partitions) and {one} (1) with {events:,} records each")
        fill = fill_topic(bootstrap, topic, events, duplicate_share)
        fill_one = fill_topic(bootstrap, one, events, duplicate_share)

        progress(f"single node: consumer-service x1, {events:,} records (baseline)")
        prefix = f"bench:{run_id}:cl-single"
        try:
            single = drain(
                bootstrap,
                topic,
                f"bench-{run_id}-cl-single",
                {"REDIS_URL": store.url, "CONSUMER_REDIS_PREFIX": prefix},
                lambda: pipeline_counts(store.client, prefix),
                fill,
                1,
                {},
                log_dir,
                "single node",
            )
        finally:
            store.delete_prefix(prefix)
        single["masters"] = 1
        variants.append(single)

        progress("starting a local Redis Cluster: 3 masters + 3 replicas")
        three = LocalRedisCluster(root / "three")
        try:
            three.start()
            variants += one_and_two_replicas(
                bootstrap, run_id, three, "3 masters", topic, fill, log_dir
            )
            variants.append(
                on_cluster(
                    bootstrap, run_id, three, "3 masters, WAIT 1", topic, fill, 1, log_dir,
                    {"CONSUMER_REDIS_WAIT_REPLICAS": "1"},
                )
            )  # fmt: skip
            variants.append(
                on_cluster(bootstrap, run_id, three, "1 partition", one, fill_one, 1, log_dir)
            )
        finally:
            three.stop()

        progress("starting a one-shard Redis Cluster: 1 master + 1 replica")
        shard = one_shard_cluster(root / "one")
        try:
            variants += one_and_two_replicas(
                bootstrap, run_id, shard, "one shard", topic, fill, log_dir
            )
        finally:
            shard.stop()
    finally:
        delete_topics(bootstrap, topics)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "topic_records": fill.records,
        "unique_events": fill.unique,
        "duplicates": fill.duplicates,
        "redis": "every node appendonly yes, appendfsync always",
        "variants": variants,
    }

"""Faults injected into the suite's Redis Cluster under traffic, and what they left behind.

A master killed mid-stream and its replica promoted. Replication is asynchronous, so the
events lost are exactly those that

1. the killed master acknowledged (with `appendfsync always`, exactly what its AOF
   holds: it is read back after the kill, on a copy),
2. its replica never received (the replica's data when it resumed, before its promotion;
   read through READONLY), and
3. whose offsets the consumer group had committed by the kill (read before the
   promotion: no batch on that master's slots can be acknowledged in between, so no
   offset of theirs can be committed).

Whatever was acknowledged only by the killed master but not yet committed is delivered
again and stored on the promoted replica. With WAIT no batch counts as written before a
replica has it, so point 3 leaves nothing.

To make that window certain rather than a matter of microseconds, the replica is frozen
(SIGSTOP) and its link closed by the master for a moment first: the master keeps
acknowledging, alone, as it would behind a slow or partitioned replica.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.clusterharness import LocalRedisCluster, Node
from tests.integration.consumer.test_redis_outage import PrivateRedis

from .harness import PARTITIONS, committed_offsets, wait_for
from .scenario import Run

# How long the master acknowledges writes with its replica cut off.
CUT_OFF_SECONDS = 1.5


@dataclass
class Failover:
    """What one master's death left behind, per the module docstring."""

    master: str
    partitions: list[int]
    # eventId -> (partition, offset), for the killed master's partitions.
    master_had: dict[str, tuple[int, int]] = field(default_factory=dict)
    replica_had: set[str] = field(default_factory=set)
    # eventId claims (`<prefix>:claim:{<eventId>}`) in the master's slots, on each side.
    master_claims: set[str] = field(default_factory=set)
    replica_claims: set[str] = field(default_factory=set)
    committed: dict[int, int] = field(default_factory=dict)
    promoted_after: float = 0.0

    @property
    def master_only(self) -> dict[str, tuple[int, int]]:
        """Acknowledged by the killed master, never received by its replica."""
        return {i: po for i, po in self.master_had.items() if i not in self.replica_had}

    @property
    def master_only_claims(self) -> set[str]:
        """Claims the killed master acknowledged and its replica never received. With
        WAIT these are what the master held alone: the claims step comes first, and its
        failed WAIT stops the batch before any event is stored."""
        return self.master_claims - self.replica_claims

    @property
    def predicted_lost(self) -> set[str]:
        """Of those, the ones whose offsets were committed: never delivered again."""
        return {i for i, (p, o) in self.master_only.items() if o < self.committed[p]}

    def describe(self) -> str:
        only = self.master_only
        lost = self.predicted_lost
        per_partition = Counter(self.master_only[i][0] for i in lost)
        return (
            f"master {self.master} (partitions {', '.join(map(str, self.partitions))}) "
            f"SIGKILLed after {CUT_OFF_SECONDS} s with its replica cut off; it had "
            f"acknowledged {len(self.master_only_claims)} eventId claims and {len(only)} "
            f"events its replica never received; {len(lost)} of these events "
            f"were committed by the kill (predicted lost, per partition "
            f"{dict(sorted(per_partition.items()))}), {len(only) - len(lost)} were not "
            f"(delivered again); replica promoted {self.promoted_after:.1f} s after the kill"
        )


def tag(prefix: str, partition: int) -> str:
    return f"{{{prefix}:p{partition}}}"


def partitions_by_master(cluster: LocalRedisCluster, prefix: str) -> dict[int, list[int]]:
    """The consumer's partitions grouped by the port of the master holding their keys."""
    found: dict[int, list[int]] = {}
    for p in range(PARTITIONS):
        found.setdefault(cluster.master_of_key(f"{tag(prefix, p)}:seq").port, []).append(p)
    return found


def busiest_master(cluster: LocalRedisCluster, prefix: str) -> tuple[Node, list[int]]:
    """The master holding most of the consumer's partitions, and those partitions."""
    port, parts = max(partitions_by_master(cluster, prefix).items(), key=lambda kv: len(kv[1]))
    return next(n for n in cluster.nodes if n.port == port), parts


def _index_ids(client: redis.Redis, prefix: str, partitions: list[int]) -> set[str]:
    ids: set[str] = set()
    for p in partitions:
        ids.update(m.decode() for m in client.zrange(f"{tag(prefix, p)}:index", 0, -1))
    return ids


def _claims(client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=f"{prefix}:claim:*", count=1000)}


def _stored_in_aof(
    node_dir: Path, copy_dir: Path, prefix: str, partitions: list[int]
) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """Every event of `partitions` in the AOF a killed node left in `node_dir`, with its
    partition and offset, and every claim: a standalone Redis loads a copy of it."""
    shutil.copytree(node_dir, copy_dir)
    (copy_dir / "nodes.conf").unlink(missing_ok=True)
    server = PrivateRedis(copy_dir)
    server.start()
    client = redis.Redis.from_url(server.url, socket_timeout=10)
    try:
        found: dict[str, tuple[int, int]] = {}
        for p in partitions:
            ids = [m.decode() for m in client.zrange(f"{tag(prefix, p)}:index", 0, -1)]
            bodies = client.mget([f"{tag(prefix, p)}:event:{i}" for i in ids]) if ids else []
            for event_id, body in zip(ids, bodies, strict=True):
                assert body is not None, f"index entry {event_id} without its event"
                stored = json.loads(body)
                found[event_id] = (int(stored["partition"]), int(stored["offset"]))
        return found, _claims(client, prefix)
    finally:
        client.close()
        server.kill()


def _replication_offset(node: Node, field_name: str) -> int:
    client = node.client()
    try:
        return int(client.info("replication").get(field_name, -1))
    finally:
        client.close()


def kill_master_mid_stream(
    run: Run, cluster: LocalRedisCluster, work: Path, killed: Callable[[str], None]
) -> Failover:
    """Cut the busiest master's replica off, let the master acknowledge alone for
    CUT_OFF_SECONDS, SIGKILL it (`killed` is told), let the cluster promote the replica,
    and bring the old master back as the new one's replica. What each side held, and what
    was committed, is read on the way (see the module docstring)."""
    master, parts = busiest_master(cluster, run.prefix)
    replica = cluster.replica_of(master)
    facts = Failover(f"127.0.0.1:{master.port}", parts)
    # Start from a replica in step: whatever it misses is then what the cut-off costs.
    target = _replication_offset(master, "master_repl_offset")
    wait_for(
        lambda: _replication_offset(replica, "slave_repl_offset") >= target, 10, "replica in step"
    )
    assert replica.proc is not None and master.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        client = master.client()
        try:
            client.client_kill_filter(_type="replica")
        finally:
            client.close()
        time.sleep(CUT_OFF_SECONDS)
        master.kill()
        killed_at = time.monotonic()
        killed(f"master {facts.master} SIGKILLed, its replica promoted by the cluster")
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    client = replica.client(5.0)
    try:
        # Before its promotion the replica takes no writes: this is what it had.
        client.execute_command("READONLY")
        facts.replica_had = _index_ids(client, run.prefix, parts)
        facts.replica_claims = _claims(client, run.prefix)
    finally:
        client.close()
    # Commits are asynchronous: a batch the master acknowledged just before the kill may
    # be committed a moment later. Until the promotion nothing on those slots can be
    # acknowledged, so the last offsets read while the replica is still a replica are
    # the ones the kill left committed.
    deadline = time.monotonic() + 30
    while True:
        offsets = committed_offsets(run.broker.bootstrap, run.topic, run.group)
        if replica.role() != "slave":
            break
        facts.committed = offsets
        assert time.monotonic() < deadline, "the replica was not promoted"
        time.sleep(0.1)
    assert facts.committed, "the replica was promoted before the offsets could be read"
    facts.promoted_after = time.monotonic() - killed_at
    facts.master_had, facts.master_claims = _stored_in_aof(
        master.dir, work / f"aof-{master.port}", run.prefix, parts
    )
    # The old master rejoins as the promoted one's replica (WAIT needs one).
    master.start(cluster.node_timeout_ms)
    wait_for(cluster.healthy, 60, "the cluster whole again")
    return facts


def kill_and_restart_shard(
    cluster: LocalRedisCluster, prefix: str, down_seconds: float, killed: Callable[[str], None]
) -> None:
    """SIGKILL the busiest master and its replica together, so no failover can happen
    (`killed` is told, with a description); restart the master on its AOF after
    `down_seconds`, then the replica."""
    master, parts = busiest_master(cluster, prefix)
    replica = cluster.replica_of(master)
    replica.kill()
    master.kill()
    killed(
        f"shard of master 127.0.0.1:{master.port} (partitions {', '.join(map(str, parts))}) "
        f"SIGKILLed with its replica, the master restarted on its AOF {down_seconds:.0f} s later"
    )
    time.sleep(down_seconds)
    master.start(cluster.node_timeout_ms)
    wait_for(lambda: master.answers() and master.role() == "master", 30, "the master back")
    replica.start(cluster.node_timeout_ms)
    wait_for(cluster.healthy, 60, "the cluster whole again")


def heal(cluster: LocalRedisCluster) -> None:
    """Restart any node a failed scenario left down, and wait for the cluster to be ok."""
    for node in cluster.nodes:
        if node.proc is None:
            node.start(cluster.node_timeout_ms)
    wait_for(cluster.healthy, 60, "the cluster whole again")

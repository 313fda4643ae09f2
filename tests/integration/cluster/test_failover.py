"""A master killed mid-stream and its replica promoted, with and without WAIT.

The replica is cut off first (stopped, its link closed by the master), so the batch that
follows reaches the master alone: exactly the window asynchronous replication leaves open.

* Without WAIT the master acknowledges that batch; the worker would commit its offsets;
  after the promotion every event of it is gone. Lost: that batch, exactly.
* With WAIT 1 the batch is refused (Unavailable: no replica acknowledged), so nothing is
  committed; the worker's retry after the promotion stores it. Lost: nothing.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest

from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import BatchResult, RedisClusterEventStore
from shared.errors import Unavailable
from tests.clusterharness import LocalRedisCluster, Node
from tests.integration.consumer.conftest import make_record

NOW = "2026-11-24T05:00:00.000Z"
T = TypeVar("T")


def retry(call: Callable[[], T], timeout: float = 30) -> T:
    """As the worker does: retry an Unavailable store until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def replicated(master: Node, replica: Node) -> bool:
    m, r = master.client(), replica.client()
    try:
        offset = int(m.info("replication")["master_repl_offset"])
        return int(r.info("replication").get("slave_repl_offset", -1)) >= offset
    finally:
        m.close()
        r.close()


def online_replicas(master: Node) -> int:
    """Replicas WAIT can count: listed by the master in state `online`."""
    m = master.client()
    try:
        info = m.info("replication")
    finally:
        m.close()
    return sum(
        1
        for k, v in info.items()
        if k.startswith("slave") and k[5:].isdigit() and v.get("state") == "online"
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s: {what}")
        time.sleep(0.1)


def cut_off_and_fail_over(
    cluster: LocalRedisCluster, master: Node, replica: Node, write: Callable[[], None]
) -> None:
    """Run `write` while `replica` receives nothing from `master`, then kill the master
    and promote the replica."""
    wait_for(lambda: replicated(master, replica), 10, "replica caught up before the cut")
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        m = master.client()
        try:
            m.client_kill_filter(_type="replica")
        finally:
            m.close()
        write()
        master.kill()
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    r = replica.client(5.0)
    try:
        r.cluster("failover", "takeover")
    finally:
        r.close()
    wait_for(lambda: replica.role() == "master", 15, "replica promoted")
    wait_for(cluster.healthy, 30, "cluster ok after the promotion")


def batch(partition: int, first_offset: int, n: int = 5) -> list[Accepted]:
    return [
        Accepted(make_record(f"user-{partition}"), partition, first_offset + i) for i in range(n)
    ]


@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["without-wait", "with-wait"])
def test_a_promoted_replica_keeps_what_wait_acknowledged(
    fresh_cluster: LocalRedisCluster, wait_replicas: int
) -> None:
    prefix = f"fo:{uuid.uuid4().hex[:8]}"
    store = RedisClusterEventStore(
        fresh_cluster.url,
        prefix,
        3600,
        timeout_seconds=5.0,
        wait_replicas=wait_replicas,
        # Generous: a loaded CI machine can take hundreds of ms to answer GETACK.
        wait_timeout_ms=1500,
    )
    try:
        master = fresh_cluster.master_of_key(f"{{{prefix}:p0}}:seq")
        wait_for(lambda: online_replicas(master) > 0, 30, "the master lists an online replica")
        replica = fresh_cluster.replica_of(master)
        before, during = batch(0, 0), batch(0, 5)
        assert len(store.store_batch(before, NOW).stored) == 5
        outcome: list[BatchResult | Unavailable] = []

        def write() -> None:
            try:
                outcome.append(store.store_batch(during, NOW))
            except Unavailable as exc:
                outcome.append(exc)

        cut_off_and_fail_over(fresh_cluster, master, replica, write)

        if wait_replicas == 0:
            # Acknowledged: the worker commits these offsets and never sees them again.
            first = outcome[0]
            assert isinstance(first, BatchResult) and len(first.stored) == 5
            committed = before + during
        else:
            # Refused: nothing committed, so the worker retries the batch. While the
            # promoted master has no replica of its own the retry is refused too.
            assert isinstance(outcome[0], Unavailable)
            with pytest.raises(Unavailable):
                retry(lambda: store.store_batch(during, NOW), timeout=3)
            # The old master comes back and joins as the new master's replica.
            master.start(fresh_cluster.node_timeout_ms)
            wait_for(fresh_cluster.healthy, 30, "old master back as a replica")
            assert master.role() == "slave"
            again = retry(lambda: store.store_batch(during, NOW))
            assert len(again.stored) + len(again.redelivered) == 5
            committed = before + during
        present = {ev.event_id for ev in committed if retry(lambda e=ev: store.get(e.event_id))}
        lost = {ev.event_id for ev in committed} - present
        if wait_replicas == 0:
            assert lost == {ev.event_id for ev in during}
        else:
            assert lost == set()
            stats = retry(store.stats)
            assert (stats["stored"], stats["processed"]) == (10, 10)
    finally:
        store.close()

"""The cluster store's connection to a Redis Cluster: the client (made on first use and
made again after a topology change), and commands run as one pipeline per node, the
nodes at the same time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
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

from consumer_service.storage.base import StoreRefused
from consumer_service.storage.script import STORE_BATCH_LUA
from shared.errors import Unavailable

# Queues one command on a node's pipeline.
Queue = Callable[[redis.client.Pipeline], object]

# Errors after which the client's slot table is stale (a failover, a resharding): refresh
# it, and let the worker retry the batch against the new owners.
_TOPOLOGY_ERRORS = (MovedError, AskError, ClusterDownError, TryAgainError)

# Threads that send the per-node pipelines of one step at once; a cluster with more
# masters than this queues the rest (still correct, only slower).
_NODE_THREADS = 16


class _StaleTopology(Unavailable):
    """A node did not answer or no longer owns a slot: refresh the slot table before the
    retry."""


class ClusterNodes:
    """A Redis Cluster reached at `url`. Every method raises `Unavailable` when the
    cluster does not answer, after forgetting the slot table where it may be stale."""

    def __init__(
        self,
        url: str,
        timeout_seconds: float,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self._url = url
        self._timeout = timeout_seconds
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._rc: RedisCluster | None = None
        self._pool: ThreadPoolExecutor | None = None

    def client(self) -> RedisCluster:
        """The cluster client, made on first use."""
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

    def refresh(self) -> None:
        """Forget the slot table: the next call makes a new client, which asks the
        cluster again. (A new client rather than redis-py's re-initialisation, which
        drops the old nodes' connections without closing them.)"""
        if self._rc is not None:
            self._rc.close()
            self._rc = None

    def read(self, call: Callable[[RedisCluster], Any]) -> Any:
        """`call` with the cluster client; forgets the slot table when it fails."""
        try:
            return call(self.client())
        except (redis.RedisError, RedisClusterException) as exc:
            self.refresh()
            raise Unavailable(f"Redis Cluster did not answer: {exc}") from exc

    def on_nodes(self, commands: Sequence[tuple[str, Queue]]) -> list[Any]:
        """Run each (key, queue-one-command) on the master of its key's slot: one pipeline
        per node (commands in the given order, ended with WAIT when asked for), the
        pipelines of different nodes sent at the same time. Returns the answers in input
        order once every node has answered. When any node failed, raises only after the
        others have finished too, so a retry never overlaps this attempt: StoreRefused for
        a refused command, else Unavailable."""
        rc = self.client()
        jobs = self._by_node(rc, commands)
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
                self.refresh()
            refused = [f for f in failures if isinstance(f, StoreRefused)]
            raise (refused or failures)[0]
        answers: list[Any] = [None] * len(commands)
        for (_, _, indexes), got in zip(jobs, outcomes, strict=True):
            for i, answer in zip(indexes, cast("list[Any]", got), strict=True):
                answers[i] = answer
        return answers

    def _by_node(
        self, rc: RedisCluster, commands: Sequence[tuple[str, Queue]]
    ) -> list[tuple[ClusterNode, list[Queue], list[int]]]:
        """The commands grouped by the node owning their key: (node, queues, indexes)."""
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        try:
            for i, (key, _) in enumerate(commands):
                node = cast(Any, rc).get_node_from_key(key)
                by_node.setdefault(node.name, (node, []))[1].append(i)
        except (redis.RedisError, RedisClusterException) as exc:
            self.refresh()
            raise Unavailable(f"Redis Cluster has no node for a key: {exc}") from exc
        return [
            (node, [commands[i][1] for i in indexes], indexes) for node, indexes in by_node.values()
        ]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_NODE_THREADS, thread_name_prefix="redis-node")
        return self._pool

    def _pipeline_on(
        self, rc: RedisCluster, node: ClusterNode, queue: Sequence[Queue]
    ) -> list[Any]:
        """One node's pipeline, run on a pool thread: touches no state of this object (the
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
            self._check_replicas(node, answers.pop())
        _check_answers(node, answers)
        return answers

    def _check_replicas(self, node: ClusterNode, acked: Any) -> None:
        if isinstance(acked, Exception) or int(acked) < self._wait_replicas:
            raise Unavailable(
                f"only {acked} replica(s) of {node.name} acknowledged the batch within "
                f"{self._wait_timeout_ms} ms; {self._wait_replicas} required"
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.refresh()


def _check_answers(node: ClusterNode, answers: Sequence[Any]) -> None:
    """Raise for the first failed command of a node's pipeline."""
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


def _outcome(
    call: Callable[[RedisCluster, ClusterNode, Sequence[Queue]], list[Any]],
    rc: RedisCluster,
    node: ClusterNode,
    queue: Sequence[Queue],
) -> list[Any] | Exception:
    # A node's failure as a value: the caller decides only once every node is done.
    try:
        return call(rc, node, queue)
    except Unavailable as exc:
        return exc

"""A local Redis Cluster on loopback ports: 3 masters, each with one replica, persisted as
production is (AOF, fsync always, noeviction), in a directory of its own.

Ports are free ones picked at start (and their cluster bus ports, +10000, free too), so
the cluster never meets the shared Redis on 6379 or another session's cluster.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis

PRODUCTION = (
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--maxmemory-policy",
    "noeviction",
)


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For Popen's preexec_fn: a pytest killed outright runs no teardown, and what it
    started must not outlive it."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def redis_server_command(port: int, directory: Path, *options: str) -> list[str]:
    """The command line of a private redis-server: loopback only, on `port`, its files in
    `directory`, no RDB snapshots (persistence, if any, comes from `options`)."""
    return [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(directory),
        "--save",
        "",
        *options,
    ]


def redis_answers(url: str, timeout: float) -> bool:
    """True when the Redis at `url` answers PING within `timeout` seconds; never raises."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """`count` ports that are free, as are their cluster bus ports (port + 10000)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 <= 65535 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


@dataclass
class Node:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def start(self, node_timeout_ms: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            redis_server_command(
                self.port,
                self.dir,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                *PRODUCTION,
            ),
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    def answers(self) -> bool:
        return redis_answers(self.url, 0.5)

    def kill(self) -> None:
        """SIGKILL: the master dies with whatever it had not streamed to its replica."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def role(self) -> str:
        client = self.client()
        try:
            return str(client.info("replication")["role"])
        finally:
            client.close()


@dataclass
class LocalRedisCluster:
    root: Path
    node_timeout_ms: int = 2000
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, masters: int = 3, replicas_per_master: int = 1) -> None:
        # A port found free can be taken before its node binds it (by a client's outgoing
        # connection, or by another pytest-xdist worker's node); that node exits at once,
        # and the cluster is started again on other ports.
        for _ in range(3):
            ports = free_cluster_ports(masters * (1 + replicas_per_master))
            self.nodes = [Node(port, self.root / str(port)) for port in ports]
            for node in self.nodes:
                node.start(self.node_timeout_ms)
            _wait(self._nodes_answer_or_one_exited, 15, "cluster nodes answer")
            if all(n.proc is not None and n.proc.poll() is None for n in self.nodes):
                break
            self._stop_nodes()
        else:
            raise TimeoutError("cluster nodes exited at start three times (ports taken?)")
        # redis-cli gives the first `masters` addresses the slots and makes the rest
        # their replicas.
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(replicas_per_master),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait(self.healthy, 30, "cluster_state:ok on every node, replicas linked")

    def _nodes_answer_or_one_exited(self) -> bool:
        if any(n.proc is not None and n.proc.poll() is not None for n in self.nodes):
            return True
        return all(n.answers() for n in self.nodes)

    def healthy(self) -> bool:
        """Every running node says the cluster is ok and every replica's link is up."""
        for node in self.nodes:
            if node.proc is None:
                continue
            client = node.client(0.5)
            try:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                repl = client.info("replication")
                if repl["role"] == "slave" and repl.get("master_link_status") != "up":
                    return False
                if not _replicas_online(repl):
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def replica_of(self, master: Node) -> Node:
        client = master.client()
        try:
            info = client.info("replication")
        finally:
            client.close()
        port = int(info["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def master_of_key(self, key: str) -> Node:
        client = self.nodes[0].client()
        try:
            slot = int(client.cluster("keyslot", key))
            for start, end, primary, *_ in client.cluster("slots"):
                if start <= slot <= end:
                    port = int(primary[1])
                    break
            else:
                raise AssertionError(f"no node serves slot {slot}")
        finally:
            client.close()
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        self._stop_nodes()
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop_nodes(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.kill()
                node.proc = None


def _wait(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s: {what}")
        time.sleep(0.1)


def _replicas_online(replication: dict[str, object]) -> bool:
    """A master's replicas count for WAIT only once the master lists them as `online`;
    a replica whose own link is already up can still be `wait_bgsave` or `send_bulk`
    here for a moment."""
    replicas = [v for k, v in replication.items() if k.startswith("slave") and k[5:].isdigit()]
    return all(isinstance(r, dict) and r.get("state") == "online" for r in replicas)

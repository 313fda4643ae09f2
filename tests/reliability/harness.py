"""Real processes for the reliability suite: a private Kafka broker and Redis that the
scenarios may kill, the producer under gunicorn, and consumer replicas.

Everything here is started by the suite and stopped by it, on its own ports and in its own
directories: the shared broker (9092) and Redis (6379) that other tests use are never
touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import redis
import requests
from confluent_kafka import Consumer, KafkaException, TopicPartition

from infra.topics import wait_for_broker
from tests.clusterharness import die_with_parent
from tests.conftest import ROOT
from tests.integration.consumer.test_redis_outage import PrivateRedis
from tests.services import free_port

BIN = Path(sys.executable).parent
PARTITIONS = 6


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The suite's environment for a service process: nothing inherited that could point
    it at the shared broker, Redis or metrics directory, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAFKA_", "REDIS_", "PRODUCER_", "CONSUMER_", "PROMETHEUS_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class KafkaBroker:
    """A single-node broker of the suite's own, run by infra/kafka.sh with its own state
    directory and ports. The jars are those of the main local stack (LOCAL_KAFKA_LIBS), so
    nothing is resolved again."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.pidfile = state_dir / "kafka" / "kafka.pid"

    def _script(self, action: str) -> None:
        env = {
            **os.environ,
            "PYTHON": sys.executable,
            "LOCAL_STATE_DIR": str(self.state_dir),
            "LOCAL_KAFKA_PORT": str(self.port),
            "LOCAL_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            # No SASL listener: the scenarios do not use one, and its default port (the
            # main port + 2) was not chosen free.
            "LOCAL_KAFKA_SASL_PORT": "",
            "LOCAL_KAFKA_LIBS": os.environ.get(
                "LOCAL_KAFKA_LIBS", str(ROOT / ".local" / "kafka" / "libs")
            ),
        }
        subprocess.run([str(ROOT / "infra" / "kafka.sh"), action], check=True, env=env, timeout=180)

    def start(self) -> None:
        """Start (or restart on the same data) and return once it answers metadata."""
        self._script("start")
        assert wait_for_broker(self.bootstrap, 30), "private broker does not answer"

    def answers(self) -> bool:
        return wait_for_broker(self.bootstrap, 1)

    def kill(self) -> None:
        """SIGKILL: no controlled shutdown, no flush beyond what the OS already has."""
        pid = int(self.pidfile.read_text())
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _pid_alive(pid), 10, "the broker to die")

    def stop(self) -> None:
        # The broker's data is thrown away with the suite: SIGKILL is enough and quick.
        if self.pidfile.exists():
            self.kill()
            self.pidfile.unlink()


class RedisServer(PrivateRedis):
    """The suite's Redis: AOF with fsync before every answer and no eviction, as in
    production; it can be killed, shut down cleanly and started again on the same data."""

    OPTIONS = (*PrivateRedis.PRODUCTION, "--maxmemory-policy", "noeviction")

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, self.OPTIONS)

    def shutdown(self) -> None:
        """A clean stop: Redis fsyncs and closes its AOF, then exits."""
        assert self.proc is not None
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        with suppress(redis.ConnectionError):
            client.shutdown()
        client.close()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.kill()


class Service:
    """A service process started from its console script, its output in a log file."""

    name = "service"

    def __init__(self, command: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            command,
            env=dict(env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Away from the terminal's process group: a Ctrl-C reaches pytest only, and
            # the teardown stops these in order.
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def sigkill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def sigterm(self, timeout: float = 40) -> int:
        """SIGTERM and wait; the exit status (SIGKILL after `timeout`, status then < 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 40) -> int:
        """Wait for the exit; the exit status (SIGKILL after `timeout`, status then < 0)."""
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def _wait_ready(service: Service, url: str, timeout: float) -> None:
    def ready() -> bool:
        assert service.alive, f"{service.name} exited during start-up:\n{service.tail()}"
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(ready, timeout, f"{service.name} to be ready", every=0.2)


class ProducerProcess(Service):
    """`producer-service`: gunicorn, two workers of the default class, on the given port."""

    name = "producer"

    def __init__(self, bootstrap: str, topic: str, port: int, log_path: Path) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        env = child_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_TOPIC": topic,
                "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
                "PRODUCER_BIND_HOST": "127.0.0.1",
                "PRODUCER_PORT": str(port),
                "PRODUCER_WORKERS": "2",
                "PRODUCER_THREADS": "16",
                "LOG_LEVEL": "WARNING",
            }
        )
        super().__init__([str(BIN / "producer-service")], env, log_path)

    def wait_ready(self, timeout: float = 30) -> None:
        _wait_ready(self, f"{self.base}/ready", timeout)


class ConsumerReplica(Service):
    """One `consumer-service` replica: a member of `group` plus its read API on `port`."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        topic: str,
        group: str,
        redis_url: str,
        prefix: str,
        run_dir: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        metrics_dir = run_dir / f"{name}-metrics"
        env = child_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_TOPIC": topic,
                "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
                "KAFKA_CONSUMER_GROUP": group,
                "REDIS_URL": redis_url,
                "CONSUMER_REDIS_PREFIX": prefix,
                "CONSUMER_PORT": str(self.port),
                "CONSUMER_API_WORKERS": "1",
                # The broker's lowest allowed session: a killed replica's partitions move
                # on after 6 s instead of 10.
                "CONSUMER_SESSION_TIMEOUT_MS": "6000",
                # Retry Redis at least every 2 s once it is back, not every 10 s.
                "CONSUMER_BACKOFF_MAX_SECONDS": "2",
                "CONSUMER_REQUIRE_REDIS_FSYNC": "true",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                "LOG_LEVEL": "WARNING",
                **(extra_env or {}),
            }
        )
        super().__init__([str(BIN / "consumer-service")], env, run_dir / f"{name}-{self.port}.log")

    def wait_ready(self, timeout: float = 40) -> None:
        _wait_ready(self, f"{self.base}/ready", timeout)


def group_lag(bootstrap: str, topic: str, group: str) -> int | None:
    """Records of `topic` not yet committed by `group`, or None when Kafka does not answer.
    Reads committed offsets without joining the group."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = consumer.committed(parts, timeout=5)
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5)
            lag += high - max(tp.offset, 0)
        return lag
    except KafkaException:
        return None
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """The next offset `group` will read in each partition of `topic` (0 where it has
    committed nothing), read without joining the group."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def read_all_stored(base: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Every stored event, in processing order, through one replica's read API."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while True:
            params = {"limit": "1000"} if cursor is None else {"limit": "1000", "cursor": cursor}
            try:
                r = session.get(f"{base}/events/processed", params=params, timeout=30)
            except requests.RequestException:
                r = None
            if r is None or r.status_code == 503:
                assert time.monotonic() < deadline, "the read API did not answer"
                time.sleep(0.5)
                continue
            assert r.status_code == 200, r.text
            page = r.json()
            events.extend(page["events"])
            cursor = page["next"]
            if cursor is None:
                return events


def stored_total(base: str) -> int | None:
    try:
        r = requests.get(f"{base}/stats", timeout=5)
    except requests.RequestException:
        return None
    return int(r.json()["stored"]) if r.status_code == 200 else None

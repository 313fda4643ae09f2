"""The producer run as its users run it, for the tests that need a real gunicorn (signals,
worker processes, start-up warnings): its console script in a process of its own, on a
free loopback port, against the suite's broker.

    with running_producer(kafka_bootstrap, topic, PRODUCER_WORKERS="2") as producer:
        requests.post(f"{producer.base}/events/generate", ...)
    producer.log()  # its stderr, once stopped
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nothing listens on now (the usual race applies: bind soon)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def producer_command() -> list[str]:
    """`producer-service` from the venv, or the module when the script is not installed."""
    script = Path(sys.executable).with_name("producer-service")
    return [str(script)] if script.exists() else [sys.executable, "-m", "producer_service"]


class ProducerProcess:
    """One `producer-service` process; its stderr goes to a file, so a chatty log never
    fills a pipe nobody reads."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by `stop`)
        self._stopped_log: str | None = None
        self.proc = subprocess.Popen(
            producer_command(),
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /ready answers 200; patient, since a fresh worker on a busy 2-core machine
        may take seconds. Fails at once when the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"producer-service exited:\n{self.log()[-3000:]}"
            try:
                if requests.get(f"{self.base}/ready", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"producer-service did not become ready:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (when still running), then SIGKILL after `timeout` seconds; the exit
        status. The log stays readable; its file is closed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        if self._stopped_log is None:
            self._stopped_log = self.log()
            self._stderr.close()
        return status

    def log(self) -> str:
        """Everything the process wrote to stderr so far."""
        if self._stopped_log is not None:
            return self._stopped_log
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")


@contextmanager
def running_producer(
    kafka_bootstrap: str, topic: str, *, wait: bool = True, **env: str
) -> Iterator[ProducerProcess]:
    """A producer on `topic`, ready (unless `wait` is False), stopped on leaving. `env`
    adds to or overrides the defaults: loopback bind, a free port, LOG_LEVEL=WARNING."""
    port = free_port()
    process = ProducerProcess(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC": topic,
            "PRODUCER_BIND_HOST": "127.0.0.1",
            "PRODUCER_PORT": str(port),
            "LOG_LEVEL": "WARNING",
            **env,
        },
        port,
    )
    try:
        if wait:
            process.wait_ready()
        yield process
    finally:
        process.stop()

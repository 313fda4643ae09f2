"""The real `producer-service` (gunicorn, two workers of each worker class) stopped with
SIGTERM under load: in-flight requests finish, and every event that got a 201 is in the
topic."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.integration.producer.conftest import read_topic

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_command() -> list[str]:
    script = Path(sys.executable).with_name("producer-service")
    return [str(script)] if script.exists() else [sys.executable, "-m", "producer_service"]


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "producer-service exited during start-up"
        try:
            if requests.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("producer-service did not become ready")


@pytest.mark.parametrize("worker_class", ["gthread", "gevent", "sync"])
def test_sigterm_loses_nothing_acknowledged(
    kafka_bootstrap: str, topic: str, worker_class: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "PRODUCER_BIND_HOST": "127.0.0.1",
        "PRODUCER_PORT": str(port),
        "PRODUCER_WORKERS": "2",
        "PRODUCER_WORKER_CLASS": worker_class,
        "PRODUCER_THREADS": "8",
        # A long linger keeps records queued in librdkafka when the signal lands.
        "PRODUCER_LINGER_MS": "200",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        service_command(), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # (eventId, when the request was sent, when it was answered)
    acked: list[tuple[str, float, float]] = []
    other: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n: int) -> None:
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                body = {"userId": f"user-{n}", "eventType": "LOGIN", "payload": {"i": i}}
                i += 1
                sent = time.monotonic()
                try:
                    r = session.post(f"{base}/events/generate", json=body, timeout=15)
                except requests.ConnectionError:
                    return  # the listener is closed: the server stopped accepting
                answered = time.monotonic()
                with lock:
                    if r.status_code == 201:
                        acked.append((r.json()["eventId"], sent, answered))
                    else:
                        other.append(r.status_code)

    try:
        wait_healthy(base, proc)
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    for t in threads:
        t.join(timeout=20)

    assert returncode == 0, stderr
    assert other == [], other  # no 503/500 while stopping: in-flight requests finished
    acked_ids = {event_id for event_id, _, _ in acked}
    assert len(acked_ids) > 20
    # Requests really in flight when the signal came (sent before it, answered after it;
    # the 200 ms linger keeps each one waiting) were still answered 201.
    in_flight = [e for e, sent, answered in acked if sent < sigterm_at < answered]
    assert in_flight, "no request was in flight at SIGTERM; the test proved nothing"
    in_topic = {json.loads(m.value())["eventId"] for m in read_topic(kafka_bootstrap, topic)}
    assert acked_ids <= in_topic

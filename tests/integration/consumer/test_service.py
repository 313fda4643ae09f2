"""`python -m consumer_service` as a process: worker + read API under gunicorn, metrics
across processes, JSON log lines, SIGTERM, and a replica killed outright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from tests.services import free_port

from .conftest import WorkerThread, make_record, produce, wait_until
from .test_worker import committed_total

ROOT = Path(__file__).resolve().parents[3]


def service_env(settings: ConsumerSettings, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.common.kafka_bootstrap_servers,
        KAFKA_TOPIC=settings.common.kafka_topic,
        REDIS_URL=settings.common.redis_url,
        KAFKA_CONSUMER_GROUP=settings.consumer_group,
        CONSUMER_REDIS_PREFIX=settings.redis_prefix,
        CONSUMER_PORT=str(port),
        CONSUMER_API_WORKERS="1",
        CONSUMER_POLL_TIMEOUT_SECONDS="0.1",
        CONSUMER_SESSION_TIMEOUT_MS="6000",
        CONSUMER_MAX_POLL_INTERVAL_MS="30000",
        CONSUMER_BATCH_SIZE="50",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = tmp_path / f"service-{len(procs)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "consumer_service"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        procs.append(proc)
        return proc, log_path

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def get_json(url: str) -> Any:
    try:
        resp = requests.get(url, timeout=2)
    except requests.RequestException:
        return None
    return resp.json() if resp.status_code == 200 else None


def test_service_serves_metrics_logs_json_and_stops_cleanly_on_sigterm(
    settings: ConsumerSettings, spawn: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The per-event line is opt-in (docs/consumer.md, "Logging").
    proc, log_path = spawn(service_env(settings, port, CONSUMER_LOG_EVENTS="true"))
    records = [make_record(f"user-{n % 3}", payload={"secret": "do-not-log"}) for n in range(60)]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, records)

    wait_until(lambda: get_json(f"{base}/ready"), 30, "the replica is ready")
    wait_until(
        lambda: (b := get_json(f"{base}/events/processed")) and b["total"] == 60,
        20,
        "every event served by the replica's API",
    )

    def processed_metric() -> float:
        text = requests.get(f"{base}/metrics", timeout=2).text
        lines = [
            ln for ln in text.splitlines() if ln.startswith("consumer_events_processed_total ")
        ]
        return float(lines[0].split()[1]) if lines else -1.0

    wait_until(lambda: processed_metric() == 60.0, 10, "worker metrics visible in the API")
    # Lag is sampled about once a second.
    wait_until(
        lambda: "consumer_lag{" in requests.get(f"{base}/metrics", timeout=2).text,
        5,
        "lag per partition on /metrics",
    )

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/health", timeout=1)
    assert committed_total(settings) == 60

    text = log_path.read_text()
    assert "do-not-log" not in text
    lines = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    processed = [ln for ln in lines if ln["message"] == "event processed"]
    assert len(processed) == 60
    assert {"event_id", "user_id", "event_type", "partition", "offset"} <= processed[0].keys()
    assert {ln["event_id"] for ln in processed} == {r["eventId"] for r in records}


def test_a_replica_killed_outright_is_replaced_without_loss_or_doubles(
    settings: ConsumerSettings,
    spawn: Callable[..., tuple[subprocess.Popen[bytes], Path]],
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
) -> None:
    store = make_store(settings)
    records = [make_record(f"user-{n % 20}") for n in range(4000)]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, records)
    proc, _ = spawn(
        service_env(settings, free_port(), CONSUMER_API_ENABLED="false", CONSUMER_BATCH_SIZE="20")
    )
    wait_until(lambda: store.stats()["processed"] >= 300, 30, "the replica is working")
    proc.kill()  # no commit on the way out: its last batches get replayed
    proc.wait(10)
    assert store.stats()["processed"] < len(records), "killed mid-stream"

    start_worker(settings)
    stats = wait_until(
        lambda: (s := store.stats())["processed"] >= len(records) and s, 40, "all stored"
    )
    assert stats["processed"] == len(records)
    # Replayed records are recognised as the same records, not counted as duplicates.
    assert stats["duplicatesSkipped"] == 0
    assert stats["stored"] == len(records)
    wait_until(lambda: committed_total(settings) == len(records), 10, "all committed")


def test_a_second_sigint_exits_at_once_even_while_the_worker_is_inside_a_poll(
    settings: ConsumerSettings, spawn: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    port = free_port()
    # A long poll: the first SIGINT alone would take up to 5 s to be acted on.
    proc, log_path = spawn(service_env(settings, port, CONSUMER_POLL_TIMEOUT_SECONDS="5"))
    wait_until(lambda: get_json(f"http://127.0.0.1:{port}/ready"), 30, "ready")
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: "stop requested" in log_path.read_text(), 5, "first SIGINT taken")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 1
    assert time.monotonic() - started < 2
    assert "second interrupt" in log_path.read_text()

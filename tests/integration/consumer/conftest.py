"""Helpers for the consumer's integration tests: settings pointed at the test's own topic,
group and key prefix; workers run as threads, each with its own Consumer."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.dlq import KafkaDeadLetterQueue
from consumer_service.pipeline.worker import Worker
from consumer_service.storage import RedisEventStore
from shared.config import CommonSettings
from shared.events import record_headers, utc_timestamp
from shared.json_codec import compact_json
from tests.clusterharness import redis_answers, redis_server_command


def wait_until(condition: Callable[[], Any], timeout: float, message: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s: {message}")
        time.sleep(0.05)


def make_record(user_id: str = "user-1", event_type: str = "LOGIN", **extra: Any) -> dict[str, Any]:
    record = {
        "eventId": str(uuid.uuid4()),
        "userId": user_id,
        "eventType": event_type,
        "timestamp": utc_timestamp(),
        "payload": {},
        "schemaVersion": 1,
    }
    record.update(extra)
    return record


# The broker's default limit on a record batch (`message.max.bytes`, and so a topic's
# `max.message.bytes`; infra/kafka.sh keeps the default). librdkafka's own default,
# 1,000,000, would refuse locally what the broker accepts: a raw writer can go this far.
BROKER_MAX_MESSAGE_BYTES = 1_048_588
BROKER_SIZED = {"message.max.bytes": BROKER_MAX_MESSAGE_BYTES}


@dataclass
class Raw:
    """A record to produce as-is (for poison tests)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def produce(
    bootstrap: str,
    topic: str,
    items: Sequence[dict[str, Any] | Raw],
    config: Mapping[str, Any] | None = None,
) -> None:
    """Produce `items` in order and wait for every acknowledgement. `config` adds
    producer properties (e.g. `BROKER_SIZED`, for records at the broker's size limit)."""
    # Idempotent, as the producer service is: without it a retry after a transient error
    # (a fresh topic's leaders settling) can reorder records, and tests of per-user order
    # then fail for the producer's reasons, not the consumer's.
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": True,
            **(config or {}),
        }
    )
    for item in items:
        if isinstance(item, Raw):
            producer.produce(topic, key=item.key, value=item.value, headers=item.headers)
        else:
            producer.produce(
                topic,
                key=item["userId"].encode(),
                value=compact_json(item),
                headers=record_headers(item),
            )
        producer.poll(0)
    assert producer.flush(15) == 0


def kafka_dlq(settings: ConsumerSettings) -> KafkaDeadLetterQueue:
    """The DLQ client the entry point gives a worker (the topic fixture made the topic)."""
    return KafkaDeadLetterQueue(
        settings.common.kafka_bootstrap_servers,
        settings.dlq_topic,
        settings.consumer_group,
        settings.dlq_flush_timeout_seconds,
    )


class WorkerThread:
    """A Worker in a thread; `stop()` asks it to stop and returns its exit code."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.exit_code = self.worker.run()

    def start(self) -> WorkerThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 20) -> int | None:
        self.worker.request_stop()
        return self.join(timeout)

    def join(self, timeout: float = 20) -> int | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "worker did not stop"
        return self.exit_code


@pytest.fixture
def settings(
    kafka_bootstrap: str, redis_url: str, topic: str, consumer_group: str, redis_prefix: str
) -> ConsumerSettings:
    return ConsumerSettings(
        common=CommonSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_topic=topic,
            kafka_topic_partitions=6,
            redis_url=redis_url,
        ),
        consumer_group=consumer_group,
        redis_prefix=redis_prefix,
        batch_size=100,
        poll_timeout_seconds=0.1,
        session_timeout_ms=6000,
        max_poll_interval_ms=30000,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.5,
        redis_timeout_seconds=1.0,
        dlq_flush_timeout_seconds=5.0,
    )


@pytest.fixture
def make_store(redis_url: str) -> Iterator[Callable[..., RedisEventStore]]:
    stores: list[RedisEventStore] = []

    def build(settings: ConsumerSettings, url: str | None = None) -> RedisEventStore:
        store = RedisEventStore.from_url(
            url or redis_url,
            settings.redis_prefix,
            settings.dedup_ttl_seconds,
            retention_max_events=settings.retention_max_events,
            retention_max_age_seconds=settings.retention_max_age_seconds,
            timeout_seconds=settings.redis_timeout_seconds,
        )
        stores.append(store)
        return store

    yield build
    for store in stores:
        store.close()


@pytest.fixture
def start_worker(
    make_store: Callable[..., RedisEventStore],
) -> Iterator[Callable[..., WorkerThread]]:
    """Start workers; any still running at the end are stopped."""
    running: list[WorkerThread] = []

    def start(
        settings: ConsumerSettings, store: RedisEventStore | None = None, **kwargs: Any
    ) -> WorkerThread:
        worker = Worker(settings, store or make_store(settings), kafka_dlq(settings), **kwargs)
        thread = WorkerThread(worker).start()
        running.append(thread)
        return thread

    yield start
    for thread in running:
        thread.stop()


def with_(settings: ConsumerSettings, **changes: Any) -> ConsumerSettings:
    return replace(settings, **changes)


class PrivateRedis:
    """A redis-server of this test's own, persisted like production (AOF, fsync always)
    unless other `options` are given, that can be killed and started again on the same
    port and data directory."""

    PRODUCTION = ("--appendonly", "yes", "--appendfsync", "always")

    def __init__(self, directory: Path, options: Sequence[str] = PRODUCTION) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.options = tuple(options)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            redis_server_command(self.port, self.dir, *self.options), stdout=subprocess.DEVNULL
        )
        wait_until(lambda: redis_answers(self.url, 0.5), 10, "private redis-server answers")

    def kill(self) -> None:
        """SIGKILL: the harshest stop; only what was fsynced to the AOF survives."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.kill()

"""The real stack for the client's tests: one topic and one consumer replica (with its
read API) per test module, and `producer-service` processes each test starts, stops and
configures as its fault needs. Every test tracks events for users of its own, so the
module's tests share the topic without seeing each other's events."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka.admin import AdminClient

from infra.topics import ensure_topics
from tests.reliability.harness import (
    BIN,
    PARTITIONS,
    ConsumerReplica,
    Service,
    child_env,
    read_all_stored,
    wait_for,
)
from tests.services import free_port

CLIENT_DIR = Path(__file__).resolve().parents[3] / "client"


@dataclass
class Stack:
    bootstrap: str
    topic: str
    consumer: ConsumerReplica
    run_dir: Path

    def stored(self, users: set[str]) -> list[dict[str, Any]]:
        """Every stored event of `users`, in processing order."""
        return [e for e in read_all_stored(self.consumer.base) if e["userId"] in users]


class Producer(Service):
    """`producer-service` (gunicorn, 2 workers) for the stack's topic on `port`."""

    name = "producer"

    def __init__(self, stack: Stack, port: int, env: Mapping[str, str]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        full = child_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
                "KAFKA_TOPIC": stack.topic,
                "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
                "PRODUCER_BIND_HOST": "127.0.0.1",
                "PRODUCER_PORT": str(port),
                "PRODUCER_WORKERS": "2",
                "PRODUCER_THREADS": "8",
                "LOG_LEVEL": "WARNING",
                **env,
            }
        )
        log = stack.run_dir / f"producer-{port}-{uuid.uuid4().hex[:6]}.log"
        super().__init__([str(BIN / "producer-service")], full, log)

    def wait_up(self, path: str = "/ready", timeout: float = 30) -> None:
        import requests

        def up() -> bool:
            assert self.alive, f"producer exited during start-up:\n{self.tail()}"
            try:
                return requests.get(self.url + path, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout, "the producer to answer", every=0.1)


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with open_stack(kafka_bootstrap, redis_url, tmp_path_factory) as opened:
        yield opened


@contextlib.contextmanager
def open_stack(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    consumer_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """A topic of its own and a consumer replica (started with `consumer_env` added to
    its environment) with its read API; all removed on leaving."""
    unique = uuid.uuid4().hex[:10]
    topic = f"test-client-{unique}"
    prefix = f"test:{unique}"
    ensure_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], PARTITIONS)
    run_dir = tmp_path_factory.mktemp("client-stack")
    consumer = ConsumerReplica(
        "consumer",
        kafka_bootstrap,
        topic,
        f"test-group-{unique}",
        redis_url,
        prefix,
        run_dir,
        consumer_env,
    )
    try:
        consumer.wait_ready()
        yield Stack(kafka_bootstrap, topic, consumer, run_dir)
    finally:
        consumer.sigterm(20)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for future in admin.delete_topics([topic, f"{topic}.dlq"], operation_timeout=10).values():
            future.result()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def start_producer(stack: Stack) -> Iterator[Callable[..., Producer]]:
    """Starts producers on demand (on `port`, or a free one); all are stopped afterwards."""
    started: list[Producer] = []

    def start(port: int | None = None, wait: str = "/ready", **env: str) -> Producer:
        producer = Producer(stack, port or free_port(), env)
        started.append(producer)
        producer.wait_up(wait)
        return producer

    yield start
    for producer in started:
        if producer.alive:
            producer.sigterm(20)


def client_env() -> dict[str, str]:
    """The environment for a child process that imports `activity_client`."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(CLIENT_DIR), os.getcwd()])}


def expect_stored(
    stack: Stack,
    sent: Mapping[str, list[int]],
    timeout: float = 60,
    maybe: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Wait until every event of `sent` (user -> the `n` of each tracked event, in track
    order) is stored, then check that each is stored exactly once and in that order.
    `maybe` names at most one event per user that may be stored after the others (one
    whose `track()` a kill interrupted). The fault results as numbers: tracked,
    stored, lost, duplicated, order breaks."""
    users = set(sent)
    total = sum(len(v) for v in sent.values())
    stored: list[dict[str, Any]] = []

    def all_there() -> bool:
        nonlocal stored
        stored = stack.stored(users)
        return len(stored) >= total

    # On a timeout the counts below say what is missing, which is the useful failure.
    with contextlib.suppress(AssertionError):
        wait_for(all_there, timeout, f"{total} events stored", every=0.5)
    by_user: dict[str, list[int]] = {u: [] for u in users}
    for event in stored:
        by_user[event["userId"]].append(event["payload"]["n"])
    for user, n in (maybe or {}).items():
        if by_user[user][-1:] == [n]:
            by_user[user].pop()
    lost = sum(len(set(sent[u]) - set(by_user[u])) for u in users)
    duplicated = sum(len(by_user[u]) - len(set(by_user[u])) for u in users)
    breaks = sum(
        sum(1 for a, b in zip(by_user[u], by_user[u][1:], strict=False) if a >= b) for u in users
    )
    result = {
        "tracked": total,
        "stored": len(stored),
        "lost": lost,
        "duplicated": duplicated,
        "order_breaks": breaks,
    }
    print(f"fault result: {result}", file=sys.stderr)
    assert result == {**result, "lost": 0, "duplicated": 0, "order_breaks": 0}, result
    assert by_user == {u: list(sent[u]) for u in users}
    return result

"""Real Kafka and Redis for the integration tests, whichever way they can be had.

1. `KAFKA_BOOTSTRAP_SERVERS` / `REDIS_URL` (or the local defaults) already answer: use them,
   and leave them running.
2. A Docker engine answers: start them with testcontainers.
3. Otherwise start the project's own local stack (infra/kafka.sh, infra/redis.sh) and stop
   it again at the end of the session.

Each test then gets its own topic (plus its `.dlq`), consumer group and Redis key prefix.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from infra.topics import ensure_topics, wait_for_broker
from tests.clusterharness import redis_answers

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TEST_PARTITIONS = 6


def _docker_answers() -> bool:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        # Probe the socket ourselves first: the Docker SDK leaks its socket when the
        # engine is absent, and pytest turns that ResourceWarning into an error.
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(2)
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError:
                return False
    try:
        import docker

        client = docker.from_env(timeout=3)
    except Exception:  # no SDK, bad DOCKER_HOST, no permission: no Docker here
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _run_infra(script: str, action: str) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(ROOT / "infra" / script), action], check=True, env=env)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real Kafka broker for this test session."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)
    if wait_for_broker(bootstrap, 2):
        yield bootstrap
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.3.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        _run_infra("kafka.sh", "start")
        try:
            yield DEFAULT_BOOTSTRAP
        finally:
            _run_infra("kafka.sh", "stop")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a real Redis for this test session."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if redis_answers(url, 1):
        yield url
    elif _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
    else:
        _run_infra("redis.sh", "start")
        try:
            yield DEFAULT_REDIS_URL
        finally:
            _run_infra("redis.sh", "stop")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic(kafka_bootstrap: str, unique: str) -> Iterator[str]:
    """A fresh topic (and its `.dlq`) with several partitions, for this test alone.

    Both are deleted afterwards: a broker that keeps every test's partitions takes a
    minute to start after a few suite runs.
    """
    name = f"test-{unique}"
    ensure_topics(kafka_bootstrap, [name, f"{name}.dlq"], TEST_PARTITIONS)
    yield name
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_topics([name, f"{name}.dlq"], operation_timeout=10).values():
        future.result()


@pytest.fixture
def consumer_group(unique: str) -> str:
    return f"test-group-{unique}"


@pytest.fixture
def redis_prefix(redis_url: str, unique: str) -> Iterator[str]:
    """A key prefix for this test alone; its keys are deleted afterwards."""
    prefix = f"test:{unique}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()

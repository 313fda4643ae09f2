"""Real Kafka and Redis for the integration tests, whichever way they can be had.

1. `KAFKA_BOOTSTRAP_SERVERS` / `REDIS_URL` (or the local defaults) already answer: use them,
   and leave them running.
2. A Docker engine answers: start them with testcontainers.
3. Otherwise start the project's own local stack (infra/kafka.sh, infra/redis.sh) and stop
   it again at the end of the session.

Each test then gets its own topic (plus its `.dlq`), consumer group and Redis key prefix,
and what a test starts itself (a Redis Cluster, the reliability suite's broker, a
service) listens on free ports, so tests may run side by side: `make test` spreads them
over pytest-xdist workers.

Under xdist every worker has its own session fixtures, so the local stack of case 3 is
shared explicitly: the first worker that needs a service starts it (the others wait on a
lock, then find it answering), and only the controlling process stops it, once every
worker is done. Without xdist the one process plays both parts. (Case 2 gives each worker
containers of its own.)
"""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from infra.topics import ensure_topics, wait_for_broker
from tests.clusterharness import redis_answers

# Modules of assertions shared between suites (the client's suite drives the reliability
# harness): registered here, before any suite imports them, so their asserts explain.
pytest.register_assert_rewrite(
    "tests.reliability.harness", "tests.reliability.scenario", "tests.reliability.traffic"
)

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


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (made if missing) across processes, such as the
    pytest-xdist workers of one session, for as long as the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def kafka_start_lock() -> AbstractContextManager[None]:
    """Held around every infra/kafka.sh start the suite makes, the reliability suite's
    private brokers included, until the Kafka jars are there: on a fresh clone the first
    start resolves them, and two starts at once would resolve them over each other."""
    libs = Path(os.environ.get("LOCAL_KAFKA_LIBS", ROOT / ".local" / "kafka" / "libs"))
    if (libs / ".complete").exists():
        return nullcontext()
    return file_lock(ROOT / ".local" / "kafka-start.lock")


# The session's directory for the local stack: made by the controlling process, inherited
# by the xdist workers through the environment. It holds the lock under which a service is
# started and, named for its script, a file for each service the session started, which
# the controller stops.
_STACK_DIR = "PIPELINE_TEST_STACK_DIR"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        os.environ[_STACK_DIR] = tempfile.mkdtemp(prefix="pipeline-test-stack-")
    # A SIGTERM (`timeout`, a CI runner giving up) would end pytest without teardown and
    # leave the services it started running (the local stack, the reliability suite's
    # broker and Redis); as an interrupt, the fixtures and pytest_unconfigure stop them.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    stack_dir = Path(os.environ.pop(_STACK_DIR, ""))
    if not stack_dir.name:
        return
    try:
        for script in ("kafka.sh", "redis.sh"):
            if (stack_dir / script).exists():
                _run_infra(script, "stop")
    finally:
        shutil.rmtree(stack_dir, ignore_errors=True)


def _local_service(script: str, answers: Callable[[], bool]) -> None:
    """Start the local service of `script` unless it answers by the time this process
    holds the session's lock; the controller stops it at the end of the session."""
    stack_dir = Path(os.environ[_STACK_DIR])
    with file_lock(stack_dir / f"{script}.lock"):
        if answers():
            return
        if script == "kafka.sh":
            with kafka_start_lock():
                _run_infra(script, "start")
        else:
            _run_infra(script, "start")
        (stack_dir / script).touch()


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
        _local_service("kafka.sh", lambda: wait_for_broker(DEFAULT_BOOTSTRAP, 2))
        yield DEFAULT_BOOTSTRAP


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
        _local_service("redis.sh", lambda: redis_answers(DEFAULT_REDIS_URL, 1))
        yield DEFAULT_REDIS_URL


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (every test module and its imports, the fuzz schemas) lives
    as long as the session: frozen, it is skipped by every later garbage collection, the
    full one the cluster tests run after each test included."""
    gc.freeze()


@pytest.fixture(autouse=True)
def _free_kafka_clients_on_this_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that may hold Kafka clients, collect its garbage here, on the main
    thread. A client left in a reference cycle would otherwise be destroyed whenever the
    collector next runs, possibly on a librdkafka thread calling back into Python (an
    AdminClient resolves its futures there), and librdkafka aborts the whole process when
    a client is destroyed from its own thread: an xdist worker then dies mid-test."""
    yield
    if "unit" not in request.node.path.parts:
        gc.collect()


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

"""Session fixtures of the reliability suite: a private Kafka broker, Redis and Redis
Cluster (the scenarios kill them, so never the shared ones; under pytest-xdist each worker
that runs a scenario has its own), the sizes, and the report.

RELIABILITY_EVENTS          events per single-node scenario (default 2,000, the size
                            `make test` runs; `make reliability` uses 50,000)
RELIABILITY_CLUSTER_EVENTS  events per scenario on the Redis Cluster (default 1,000;
                            `make reliability` uses 10,000)
RELIABILITY_REPORT          when set, the file the results table is written to at the end
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clusterharness import LocalRedisCluster
from tests.conftest import ROOT, kafka_start_lock

from .harness import KafkaBroker, RedisServer
from .report import render
from .scenario import Result, traffic_seconds

DEFAULT_EVENTS = 2_000
DEFAULT_CLUSTER_EVENTS = 1_000


def reliability_events() -> int:
    raw = os.environ.get("RELIABILITY_EVENTS", "").strip()
    return int(raw) if raw else DEFAULT_EVENTS


def cluster_events() -> int:
    raw = os.environ.get("RELIABILITY_CLUSTER_EVENTS", "").strip()
    return int(raw) if raw else DEFAULT_CLUSTER_EVENTS


def scenario_timeout() -> int:
    """pytest-timeout for one scenario: its traffic, the slowest fault (a broker restart),
    settling and the read-back, with room for a loaded machine."""
    return int(180 + 3 * traffic_seconds(max(reliability_events(), cluster_events())))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: starts real services and kills them (tests/reliability)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(scenario_timeout()))


@pytest.fixture(scope="session")
def events() -> int:
    return reliability_events()


@pytest.fixture(scope="session")
def events_on_cluster() -> int:
    return cluster_events()


@pytest.fixture(scope="session")
def work_dir(report: list[Result]) -> Iterator[Path]:
    """Broker and Redis data and every process's log, under .local/reliability/ rather
    than pytest's temporary directories, which other pytest sessions on the machine
    rotate away. Removed when every scenario passed, kept for a look otherwise."""
    base = ROOT / ".local" / "reliability"
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=base))
    yield path
    if all(r.passed for r in report):
        # The read API of a SIGKILLed replica outlives it by up to its graceful timeout
        # (it gets SIGTERM when its parent dies) and may still write its log meanwhile.
        for _ in range(10):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                break
            time.sleep(1)
    elif report:
        text = render(report, reliability_events(), cluster_events())
        (path / "reliability.md").write_text(text + "\n")


@pytest.fixture(scope="session")
def private_kafka(work_dir: Path) -> Iterator[KafkaBroker]:
    if shutil.which("java") is None:
        pytest.skip("java is not installed (the suite runs its own Kafka broker)")
    libs = Path(os.environ.get("LOCAL_KAFKA_LIBS", ROOT / ".local" / "kafka" / "libs"))
    if not (libs / ".complete").exists() and shutil.which("mvn") is None:
        pytest.skip(f"no Kafka jars in {libs} and no mvn to resolve them")
    broker = KafkaBroker(work_dir)
    try:
        with kafka_start_lock():
            broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def private_redis(work_dir: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    (work_dir / "redis").mkdir()
    server = RedisServer(work_dir / "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def private_cluster(work_dir: Path) -> Iterator[LocalRedisCluster]:
    """3 masters, each with one replica, every node persisted as production (AOF, fsync
    always, noeviction); started only when a cluster scenario runs."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    cluster = LocalRedisCluster(work_dir / "cluster")
    try:
        cluster.start(masters=3, replicas_per_master=1)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def report(events: int, events_on_cluster: int) -> Iterator[list[Result]]:
    """Results in the order the scenarios ran; written to RELIABILITY_REPORT at the end."""
    target = os.environ.get("RELIABILITY_REPORT")
    if target and os.environ.get("PYTEST_XDIST_WORKER"):
        # Each worker would write the scenarios it ran over the others'.
        pytest.fail("RELIABILITY_REPORT needs every scenario in one process: run without -n")
    results: list[Result] = []
    yield results
    if target and results:
        Path(target).write_text(render(results, events, events_on_cluster) + "\n")

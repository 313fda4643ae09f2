"""The broker's SASL listener, for the tests of KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_*.

The local broker (infra/kafka.sh) has one: SASL_PLAINTEXT on LOCAL_KAFKA_SASL_PORT
(default: its PLAINTEXT port + 2), user LOCAL_KAFKA_SASL_USERNAME / _PASSWORD (default
pipeline / pipeline-secret), SCRAM-SHA-512 and PLAIN. Another broker's SASL listener is
given with KAFKA_SASL_TEST_BOOTSTRAP (and KAFKA_SASL_TEST_USERNAME / _PASSWORD). When the
broker in use has none, the tests are skipped, saying why; with KAFKA_SASL_TESTS_REQUIRED
set to true they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from confluent_kafka.admin import AdminClient

from infra.topics import ensure_topics, wait_for_broker
from shared.config import CommonSettings
from shared.kafka import KafkaAuthenticationFailed, client_config

ROOT = Path(__file__).resolve().parents[3]
MECHANISM = "SCRAM-SHA-512"


def _listener(bootstrap: str) -> tuple[str, str, str] | None:
    """(address, username, password) of the SASL listener that goes with `bootstrap`."""
    given = os.environ.get("KAFKA_SASL_TEST_BOOTSTRAP")
    if given:
        return (
            given,
            os.environ.get("KAFKA_SASL_TEST_USERNAME", "pipeline"),
            os.environ.get("KAFKA_SASL_TEST_PASSWORD", "pipeline-secret"),
        )
    host, _, port = bootstrap.rpartition(":")
    if host not in {"127.0.0.1", "localhost"} or not port.isdigit():
        return None
    sasl_port = os.environ.get("LOCAL_KAFKA_SASL_PORT") or str(int(port) + 2)
    return (
        f"{host}:{sasl_port}",
        os.environ.get("LOCAL_KAFKA_SASL_USERNAME", "pipeline"),
        os.environ.get("LOCAL_KAFKA_SASL_PASSWORD", "pipeline-secret"),
    )


def _unavailable(why: str) -> None:
    if os.environ.get("KAFKA_SASL_TESTS_REQUIRED", "").lower() in {"1", "true", "yes"}:
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def sasl_common(kafka_bootstrap: str, redis_url: str) -> CommonSettings:
    """Settings that reach the broker through its SASL listener with SCRAM-SHA-512."""
    found = _listener(kafka_bootstrap)
    if found is None:
        _unavailable(
            f"the broker at {kafka_bootstrap} is not the local stack's, and "
            "KAFKA_SASL_TEST_BOOTSTRAP does not name its SASL listener"
        )
        raise AssertionError("unreachable")
    address, username, password = found
    common = CommonSettings(
        kafka_bootstrap_servers=address,
        redis_url=redis_url,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=MECHANISM,
        kafka_sasl_username=username,
        kafka_sasl_password=password,
    )
    try:
        answers = wait_for_broker(common, 5)
    except KafkaAuthenticationFailed as exc:
        _unavailable(f"the SASL listener at {address} refused {username!r}: {exc}")
        raise AssertionError("unreachable") from exc
    if not answers:
        _unavailable(
            f"no SASL listener answers at {address}: a local broker started before "
            "infra/kafka.sh opened one needs a restart (`make down && make infra`)"
        )
    return common


@pytest.fixture
def sasl_topic(sasl_common: CommonSettings) -> Iterator[str]:
    """A fresh event topic, created through the SASL listener. Its `.dlq` is left for the
    consumer to create (also through it); both are deleted afterwards."""
    name = f"test-sasl-{uuid.uuid4().hex[:10]}"
    ensure_topics(sasl_common, [name], 3)
    yield name
    admin = AdminClient(client_config(sasl_common))
    existing = admin.list_topics(timeout=10).topics
    doomed = [t for t in (name, f"{name}.dlq") if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=10).values():
            future.result()


def wrong_password(common: CommonSettings) -> CommonSettings:
    return replace(common, kafka_sasl_password="not-the-password")


def kafka_env(common: CommonSettings, topic: str) -> dict[str, str]:
    """The environment a service gets for `common`, on top of the test runner's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAFKA_", "PRODUCER_", "CONSUMER_", "PROMETHEUS_"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        KAFKA_BOOTSTRAP_SERVERS=common.kafka_bootstrap_servers,
        KAFKA_TOPIC=topic,
        KAFKA_TOPIC_PARTITIONS="3",
        KAFKA_SECURITY_PROTOCOL=common.kafka_security_protocol,
        KAFKA_SASL_MECHANISM=common.kafka_sasl_mechanism or "",
        KAFKA_SASL_USERNAME=common.kafka_sasl_username or "",
        KAFKA_SASL_PASSWORD=common.kafka_sasl_password or "",
        REDIS_URL=common.redis_url,
    )
    return env


Spawn = Callable[[str, dict[str, str]], tuple[subprocess.Popen[bytes], Path]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start `producer-service` or `consumer-service` with its output in a log file."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(service: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = tmp_path / f"{service}-{len(procs)}.log"
        module = service.replace("-", "_")
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
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
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def status_of(url: str) -> int | None:
    try:
        return requests.get(url, timeout=3).status_code
    except requests.RequestException:
        return None

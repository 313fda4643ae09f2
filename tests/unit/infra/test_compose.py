"""docker-compose.yml, read as Compose reads it: one image built once, healthchecks that
follow the configured ports (run here against a local server), a healthcheck JVM with a
small heap of its own, and consumers that scale. No Docker engine is needed."""

from __future__ import annotations

import http.server
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[3]
APP_SERVICES = ("topics", "producer", "consumer")


def interpolate_defaults(text: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's `${NAME:-default}` as a shell where only the variables of `env` (none by
    default) are set resolves it."""
    assert re.search(r"\$(?!\{\w+:-[^}]*\})", text) is None, "only ${NAME:-default} is handled"
    given = env or {}
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: given.get(m[1]) or m[2], text)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    text = interpolate_defaults((ROOT / "docker-compose.yml").read_text())
    compose: dict[str, Any] = yaml.safe_load(text)
    return compose["services"]  # type: ignore[no-any-return]


class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[int]:
    """A server answering /ready on a port that is neither 8000 nor 8001."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield server.server_address[1]
        server.shutdown()


def run_ready_check(service: dict[str, Any], env: dict[str, str]) -> int:
    test = service["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], test
    return subprocess.run([sys.executable, *test[2:]], env=env, timeout=10).returncode


@pytest.mark.parametrize(
    ("name", "port_var"), [("producer", "PRODUCER_PORT"), ("consumer", "CONSUMER_PORT")]
)
def test_the_ready_checks_follow_the_configured_port(
    services: dict[str, Any], ready_server: int, name: str, port_var: str
) -> None:
    service = services[name]
    assert port_var in service["environment"]
    env = {**os.environ, port_var: str(ready_server)}
    assert run_ready_check(service, env) == 0
    env[port_var] = str(free_port())  # nothing listens there
    assert run_ready_check(service, env) != 0


def test_the_kafka_healthcheck_runs_with_a_small_heap_of_its_own(
    services: dict[str, Any], tmp_path: Path
) -> None:
    kafka = services["kafka"]
    command = kafka["healthcheck"]["test"]
    assert command[0] == "CMD-SHELL"
    # The check's tool stands in for Kafka's, and reports the heap options it was given.
    seen = tmp_path / "heap"
    tool = tmp_path / "kafka-broker-api-versions.sh"
    tool.write_text(f'#!/bin/sh\necho "$KAFKA_HEAP_OPTS" >{shlex.quote(str(seen))}\n')
    tool.chmod(0o755)
    shell = command[1].replace("/opt/kafka/bin/kafka-broker-api-versions.sh", str(tool))
    assert str(tool) in shell
    broker_heap = kafka["environment"]["KAFKA_HEAP_OPTS"]
    env = {**os.environ, "KAFKA_HEAP_OPTS": broker_heap}
    assert subprocess.run(["sh", "-c", shell], env=env, timeout=10).returncode == 0
    heap = seen.read_text().split()
    assert heap and heap != broker_heap.split()
    assert "-Xmx64m" in heap


def test_the_services_image_is_built_once_and_shared(services: dict[str, Any]) -> None:
    builders = [name for name, service in services.items() if "build" in service]
    assert len(builders) == 1
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1
    assert None not in images
    assert services[builders[0]]["image"] in images


def test_the_producer_waits_for_redis_its_quotas_use(services: dict[str, Any]) -> None:
    producer = services["producer"]
    assert producer["environment"]["REDIS_URL"]
    assert producer["depends_on"]["redis"]["condition"] == "service_healthy"


def test_consumers_scale(services: dict[str, Any]) -> None:
    consumer = services["consumer"]
    assert "container_name" not in consumer
    # No host port: each replica gets an ephemeral one.
    ports = [str(port).split(":") for port in consumer["ports"]]
    assert ports and all(len(port) == 3 and port[1] == "" for port in ports)


def published(text: str) -> dict[str, list[str]]:
    """Each service's published ports, as `host_ip:host_port:container_port`."""
    compose = yaml.safe_load(text)
    return {name: [str(p) for p in s.get("ports", [])] for name, s in compose["services"].items()}


def test_ports_are_published_on_localhost_only_by_default() -> None:
    # Kafka's EXTERNAL listener takes no credentials; the services none either by default.
    ports = published(interpolate_defaults((ROOT / "docker-compose.yml").read_text()))
    assert ports["kafka"] and ports["producer"] and ports["consumer"]
    for name, entries in ports.items():
        for entry in entries:
            assert entry.startswith("127.0.0.1:"), (name, entry)


def test_publish_host_exposes_them_on_purpose() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    exposed = published(interpolate_defaults(text, {"PUBLISH_HOST": "0.0.0.0"}))
    for name, entries in exposed.items():
        for entry in entries:
            assert entry.startswith("0.0.0.0:"), (name, entry)

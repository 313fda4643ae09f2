"""A broker that refuses connections or never answers: 503 within the bound, never 201."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from producer_service import create_app
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings
from shared.config import CommonSettings

ACK_TIMEOUT_MS = 800
# Time over the ack timeout the answer may take (app and test-client overhead).
SLACK = 1.0


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A port that accepts TCP connections but never says a word, like a hung broker."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(params=["refused", "silent"])
def dead_app(request: pytest.FixtureRequest, unique: str) -> Iterator[Flask]:
    # Port 1: nothing listens, every connection is refused.
    bootstrap = (
        "127.0.0.1:1" if request.param == "refused" else request.getfixturevalue("silent_broker")
    )
    settings = ProducerSettings(
        common=CommonSettings(kafka_bootstrap_servers=bootstrap, kafka_topic=f"t-{unique}"),
        ack_timeout_ms=ACK_TIMEOUT_MS,
    )
    app = create_app(settings)
    yield app
    publisher_of(app).close(2)


def test_single_event_is_503_within_the_bound(dead_app: Flask) -> None:
    client = dead_app.test_client()
    started = time.monotonic()
    response = client.post("/events/generate", json={"userId": "u", "eventType": "LOGIN"})
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "unavailable"
    assert ACK_TIMEOUT_MS / 1000 * 0.9 <= elapsed <= ACK_TIMEOUT_MS / 1000 + SLACK


def test_batch_is_503_within_the_bound(dead_app: Flask) -> None:
    client = dead_app.test_client()
    events = [{"userId": f"u{i}", "eventType": "LOGIN"} for i in range(50)]
    started = time.monotonic()
    response = client.post("/events/batch", json={"events": events})
    assert time.monotonic() - started <= ACK_TIMEOUT_MS / 1000 + SLACK
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "unavailable"


def test_ready_is_503_within_a_second(dead_app: Flask) -> None:
    started = time.monotonic()
    response = dead_app.test_client().get("/ready")
    assert response.status_code == 503
    assert time.monotonic() - started <= 1.0 + SLACK
    assert dead_app.test_client().get("/health").status_code == 200

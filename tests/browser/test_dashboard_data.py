"""GET /dashboard/data without a browser: what it answers when Kafka or Redis does not,
and that Kafka's figures are cached so polling pages cost the broker little."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from consumer_service.api import create_app
from consumer_service.api.dashboard.kafka import KAFKA_CACHE_SECONDS
from consumer_service.api.dashboard.views import state_of
from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from shared.config import CommonSettings

pytestmark = pytest.mark.integration

# Nothing listens on port 1.
NOWHERE = "127.0.0.1:1"


@pytest.fixture
def make_app(
    make_store: Callable[..., RedisEventStore],
) -> Iterator[Callable[[ConsumerSettings], Flask]]:
    apps: list[Flask] = []

    def build(settings: ConsumerSettings) -> Flask:
        app = create_app(settings, make_store(settings, settings.common.redis_url))
        apps.append(app)
        return app

    yield build
    for app in apps:
        state_of(app).close()


def with_common(settings: ConsumerSettings, **changes: str) -> ConsumerSettings:
    common: CommonSettings = replace(settings.common, **changes)
    return replace(settings, common=common)


def answered_by_kafka(client: FlaskClient) -> dict[str, Any]:
    """The first answer with Kafka's figures: a fresh topic's partitions may have no
    leader for a moment, which the dashboard reports (and caches) like any Kafka error."""
    deadline = time.monotonic() + 20
    while True:
        body: dict[str, Any] = client.get("/dashboard/data").get_json()
        if body["kafka"]["error"] is None:
            return body
        assert time.monotonic() < deadline, body["kafka"]["error"]
        time.sleep(0.2)


def test_kafka_figures_are_cached_between_polls(
    make_app: Callable[[ConsumerSettings], Flask], settings: ConsumerSettings
) -> None:
    client = make_app(settings).test_client()
    first = answered_by_kafka(client)
    second = client.get("/dashboard/data").get_json()
    assert [p["partition"] for p in first["kafka"]["partitions"]] == list(range(6))
    assert second["kafka"]["sampledAt"] == first["kafka"]["sampledAt"]
    assert second["generatedAt"] > first["generatedAt"]
    time.sleep(KAFKA_CACHE_SECONDS + 0.1)
    third = client.get("/dashboard/data").get_json()
    assert third["kafka"]["sampledAt"] > first["kafka"]["sampledAt"]


def test_kafka_not_answering_is_reported_quickly_and_the_rest_still_shown(
    make_app: Callable[[ConsumerSettings], Flask], settings: ConsumerSettings
) -> None:
    client = make_app(with_common(settings, kafka_bootstrap_servers=NOWHERE)).test_client()
    started = time.monotonic()
    response = client.get("/dashboard/data")
    took = time.monotonic() - started
    assert response.status_code == 200
    body = response.get_json()
    assert body["kafka"]["error"].startswith("Kafka did not answer")
    assert body["kafka"]["partitions"] == [] and body["kafka"]["produced"] is None
    assert body["stats"]["processed"] == 0 and body["redis"]["error"] is None
    assert took < 5, f"a broker that does not answer held the page for {took:.1f} s"
    # Cached: the next poll does not wait for the broker again.
    started = time.monotonic()
    client.get("/dashboard/data")
    assert time.monotonic() - started < 0.5


def test_redis_not_answering_is_reported_and_kafka_still_shown(
    make_app: Callable[[ConsumerSettings], Flask], settings: ConsumerSettings
) -> None:
    client = make_app(with_common(settings, redis_url=f"redis://{NOWHERE}/0")).test_client()
    response = client.get("/dashboard/data")
    assert response.status_code == 200
    body = response.get_json()
    assert body["redis"]["error"].startswith("Redis did not answer")
    assert body["stats"] is None and body["recent"] == []
    assert len(answered_by_kafka(client)["kafka"]["partitions"]) == 6

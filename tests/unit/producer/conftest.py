from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from producer_service import create_app
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from tests.unit.producer.fakes import InMemoryEventPublisher


@pytest.fixture
def settings() -> ProducerSettings:
    return ProducerSettings(
        common=CommonSettings(kafka_topic="unit-events"), max_batch_events=5, max_payload_bytes=256
    )


@pytest.fixture
def fake() -> InMemoryEventPublisher:
    return InMemoryEventPublisher()


@pytest.fixture
def app(settings: ProducerSettings, fake: InMemoryEventPublisher) -> Iterator[Flask]:
    app = create_app(settings, publisher=fake)
    app.config["TESTING"] = True
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()

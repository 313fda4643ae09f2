from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from flask import Flask
from flask.testing import FlaskClient

from producer_service import create_app
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings
from shared.config import CommonSettings


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, topic: str) -> ProducerSettings:
    return ProducerSettings(
        common=CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic),
        ack_timeout_ms=10_000,
    )


@pytest.fixture
def kafka_app(kafka_settings: ProducerSettings) -> Iterator[Flask]:
    app = create_app(kafka_settings)
    yield app
    publisher_of(app).close(5)


@pytest.fixture
def kafka_client(kafka_app: Flask) -> FlaskClient:
    return kafka_app.test_client()


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 15) -> list[Message]:
    """Every record of `topic` from the beginning, once `expected` have arrived (or the
    timeout passed), read with a real consumer."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                messages.append(msg)
        return messages
    finally:
        consumer.close()

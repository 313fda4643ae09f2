from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
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


def read_topic(bootstrap: str, topic: str, timeout: float = 15) -> list[Message]:
    """Every record of `topic`, read with a real consumer up to the end of each partition
    (its high watermark when the call starts), so a caller sees everything written before
    it, however many that is. Raises AssertionError if that takes longer than `timeout`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        deadline = time.monotonic() + timeout
        metadata = consumer.list_topics(topic, timeout=10)
        ends = {}
        for p in metadata.topics[topic].partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, p), deadline)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        messages: list[Message] = []
        while ends:
            assert time.monotonic() < deadline, f"partitions {sorted(ends)} not read to the end"
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                messages.append(msg)
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
        return messages
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, partition: TopicPartition, deadline: float) -> tuple[int, int]:
    # A topic created a moment ago may not have its partition leaders yet.
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=5)
            return int(low), int(high)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

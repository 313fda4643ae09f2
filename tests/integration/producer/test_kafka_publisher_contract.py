from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer

from producer_service.config import ProducerSettings
from producer_service.publisher import EventPublisher, KafkaEventPublisher
from shared.events import enrich
from tests.integration.producer.conftest import read_topic
from tests.unit.producer.contract import PublisherContract


class TestKafkaPublisher(PublisherContract):
    @pytest.fixture
    def publisher(
        self, kafka_settings: ProducerSettings, kafka_bootstrap: str, topic: str
    ) -> Iterator[KafkaEventPublisher]:
        self.bootstrap, self.topic = kafka_bootstrap, topic
        publisher = KafkaEventPublisher(kafka_settings)
        yield publisher
        publisher.close(5)

    def assert_nothing_published(self, publisher: EventPublisher) -> None:
        assert read_topic(self.bootstrap, self.topic) == []


def test_a_fatal_error_replaces_the_producer(
    kafka_settings: ProducerSettings, kafka_bootstrap: str, topic: str
) -> None:
    # librdkafka's fatal errors cannot be provoked on demand; its error_cb is called with
    # one, as librdkafka would. Everything else is the real client and broker.
    configs: list[dict[str, Any]] = []

    def factory(config: dict[str, Any]) -> Producer:
        configs.append(config)
        return Producer(config)

    publisher = KafkaEventPublisher(kafka_settings, producer_factory=factory)
    try:
        assert publisher.ready(5).ok
        first = enrich({"userId": "before", "eventType": "LOGIN"})
        assert publisher.publish([first], 10)[0].ok
        configs[0]["error_cb"](KafkaError(KafkaError._FATAL, "simulated", fatal=True))
        readiness = publisher.ready(5)
        assert not readiness.ok and "simulated" in (readiness.reason or "")
        assert publisher.ready(5).ok
        second = enrich({"userId": "after", "eventType": "LOGIN"})
        assert publisher.publish([second], 10)[0].ok
        assert len(configs) == 2
    finally:
        publisher.close(5)
    ids = {json.loads(m.value())["eventId"] for m in read_topic(kafka_bootstrap, topic)}
    assert ids == {first["eventId"], second["eventId"]}

from __future__ import annotations

from collections.abc import Iterator

import pytest

from producer_service.config import ProducerSettings
from producer_service.publisher import EventPublisher, KafkaEventPublisher
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

from __future__ import annotations

from collections.abc import Iterator

import pytest

from producer_service.config import ProducerSettings
from producer_service.publisher import KafkaEventPublisher
from tests.unit.producer.contract import PublisherContract


class TestKafkaPublisher(PublisherContract):
    @pytest.fixture
    def publisher(self, kafka_settings: ProducerSettings) -> Iterator[KafkaEventPublisher]:
        publisher = KafkaEventPublisher(kafka_settings)
        yield publisher
        publisher.close(5)

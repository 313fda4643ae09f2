from __future__ import annotations

import pytest

from producer_service.publisher import EventPublisher
from tests.unit.producer.contract import PublisherContract
from tests.unit.producer.fakes import InMemoryEventPublisher


class TestInMemoryPublisher(PublisherContract):
    @pytest.fixture
    def publisher(self) -> InMemoryEventPublisher:
        return InMemoryEventPublisher()

    def assert_nothing_published(self, publisher: EventPublisher) -> None:
        assert isinstance(publisher, InMemoryEventPublisher)
        assert publisher.records == []

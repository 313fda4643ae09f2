from __future__ import annotations

import pytest

from tests.unit.producer.contract import PublisherContract
from tests.unit.producer.fakes import InMemoryEventPublisher


class TestInMemoryPublisher(PublisherContract):
    @pytest.fixture
    def publisher(self) -> InMemoryEventPublisher:
        return InMemoryEventPublisher()

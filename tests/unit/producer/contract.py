"""The `EventPublisher` contract, run against every implementation (arroyo's pattern):
unit tests run it on the in-memory fake, integration tests on Kafka."""

from __future__ import annotations

from typing import Any

import pytest

from producer_service.publisher import EventPublisher
from shared.errors import Unavailable
from shared.events import enrich


def _records(users: list[str]) -> list[dict[str, Any]]:
    return [
        enrich({"userId": u, "eventType": "LOGIN", "payload": {"n": i}})
        for i, u in enumerate(users)
    ]


class PublisherContract:
    """Subclasses provide a `publisher` fixture yielding a ready `EventPublisher`."""

    def test_one_delivery_per_record_in_order(self, publisher: EventPublisher) -> None:
        records = _records(["a", "b", "c", "a"])
        deliveries = publisher.publish(records, timeout=10)
        assert [d.event_id for d in deliveries] == [r["eventId"] for r in records]
        assert all(d.ok and d.partition >= 0 and d.offset >= 0 for d in deliveries)

    def test_same_key_same_partition_increasing_offsets(self, publisher: EventPublisher) -> None:
        deliveries = publisher.publish(_records(["user-7"] * 5), timeout=10)
        assert len({d.partition for d in deliveries}) == 1
        offsets = [d.offset for d in deliveries]
        assert offsets == sorted(offsets) and len(set(offsets)) == 5

    def test_empty_publish(self, publisher: EventPublisher) -> None:
        assert publisher.publish([], timeout=1) == []

    def test_ready(self, publisher: EventPublisher) -> None:
        assert publisher.ready(timeout=5) is True

    def test_close_is_idempotent_and_final(self, publisher: EventPublisher) -> None:
        publisher.publish(_records(["x"]), timeout=10)
        assert publisher.close(timeout=5) == 0
        assert publisher.close(timeout=5) == 0
        assert publisher.ready(timeout=1) is False
        with pytest.raises(Unavailable):
            publisher.publish(_records(["x"]), timeout=1)

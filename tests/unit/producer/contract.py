"""The `EventPublisher` contract, run against every implementation (arroyo's pattern):
unit tests run it on the in-memory fake, integration tests on Kafka."""

from __future__ import annotations

from typing import Any

import pytest

from producer_service.publisher import EventPublisher
from shared.errors import InvalidEvent, Unavailable
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

    @pytest.mark.parametrize(
        "bad",
        [
            {"userId": "\ud800"},
            {"payload": {"n": float("inf")}},
            {"payload": {"\udfff": 1}},
        ],
        ids=["surrogate key", "infinite value", "surrogate in value"],
    )
    def test_an_unencodable_record_sends_none(
        self, publisher: EventPublisher, bad: dict[str, Any]
    ) -> None:
        records = _records(["a", "b", "c"])
        records[2] = {**records[2], **bad}
        with pytest.raises(InvalidEvent, match="Event 2 cannot be written"):
            publisher.publish(records, timeout=10)
        # Nothing from the failed call: the next one starts each partition where it was.
        self.assert_nothing_published(publisher)

    def assert_nothing_published(self, publisher: EventPublisher) -> None:
        """Overridden by backends that can look into the log."""

    def test_ready(self, publisher: EventPublisher) -> None:
        assert publisher.ready(timeout=5).ok is True

    def test_close_is_idempotent_and_final(self, publisher: EventPublisher) -> None:
        publisher.publish(_records(["x"]), timeout=10)
        assert publisher.close(timeout=5) == 0
        assert publisher.close(timeout=5) == 0
        readiness = publisher.ready(timeout=1)
        assert readiness.ok is False and readiness.reason
        with pytest.raises(Unavailable):
            publisher.publish(_records(["x"]), timeout=1)

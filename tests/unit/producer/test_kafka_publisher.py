"""`KafkaEventPublisher` after a fatal librdkafka error, through its producer-factory seam:
a real broker cannot easily be made to send one, so a stand-in Producer plays librdkafka
(holding deliveries, calling `error_cb`, answering `purge`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from producer_service.config import ProducerSettings
from producer_service.delivery import REASON_BROKER, Delivery
from producer_service.publisher import KafkaEventPublisher
from shared.config import CommonSettings
from shared.events import enrich

TOPIC = "unit-events"
Callback = Callable[[KafkaError | None, Any], None]


class StandInProducer:
    """Acknowledges every record at once unless `hold` is set; then keeps its callback
    until `purge`, which fails it the way librdkafka does."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.hold = False
        self.produced: list[bytes] = []
        self.held: list[Callback] = []
        self.purged = False
        self.offset = 0

    def fatal(self, reason: str) -> None:
        self.config["error_cb"](KafkaError(KafkaError._FATAL, reason, fatal=True))

    def produce(
        self, topic: str, key: bytes, value: bytes, headers: Any, on_delivery: Callback
    ) -> None:
        self.produced.append(key)
        if self.hold:
            self.held.append(on_delivery)
            return
        message = SimpleNamespace(partition=lambda: 0, offset=lambda: self.offset)
        self.offset += 1
        on_delivery(None, message)

    def poll(self, timeout: float) -> int:
        time.sleep(min(timeout, 0.01))
        return 0

    def purge(self) -> None:
        self.purged = True
        held, self.held = self.held, []
        for callback in held:
            callback(KafkaError(KafkaError._PURGE_QUEUE, "purged"), None)

    def flush(self, timeout: float) -> int:
        return len(self.held)

    def list_topics(self, topic: str, timeout: float) -> Any:
        partition = SimpleNamespace(id=0)
        return SimpleNamespace(
            topics={TOPIC: SimpleNamespace(error=None, partitions={0: partition})}
        )


@pytest.fixture
def producers() -> list[StandInProducer]:
    return []


@pytest.fixture
def publisher(producers: list[StandInProducer]) -> Iterator[KafkaEventPublisher]:
    def factory(config: dict[str, Any]) -> StandInProducer:
        producers.append(StandInProducer(config))
        return producers[-1]

    settings = ProducerSettings(common=CommonSettings(kafka_topic=TOPIC))
    publisher = KafkaEventPublisher(settings, producer_factory=factory)
    publisher.RECOVERY_INTERVAL = 0.0
    yield publisher
    publisher.close(1)


def record(user: str = "u") -> dict[str, Any]:
    return enrich({"userId": user, "eventType": "LOGIN", "payload": {}})


def test_fatal_error_is_not_ready_then_replaced(
    publisher: KafkaEventPublisher, producers: list[StandInProducer]
) -> None:
    assert publisher.ready(1).ok
    first = producers[0]
    first.hold = True
    waiting: list[list[Delivery]] = []
    in_flight = threading.Thread(target=lambda: waiting.append(publisher.publish([record()], 5)))
    in_flight.start()
    while not first.produced:
        time.sleep(0.005)

    first.fatal("simulated fatal idempotence error")

    readiness = publisher.ready(1)
    assert not readiness.ok
    assert "simulated fatal idempotence error" in (readiness.reason or "")
    # The failed producer was purged: its in-flight request is answered now, not after 5 s.
    in_flight.join(timeout=2)
    assert not in_flight.is_alive()
    ((delivery,),) = waiting
    assert delivery.reason == REASON_BROKER
    assert first.purged and len(producers) == 2

    # The replacement serves requests; a late error from the old one does not touch it.
    first.fatal("late echo from the old producer")
    assert publisher.ready(1).ok
    (delivery,) = publisher.publish([record("v")], 5)
    assert delivery.ok
    assert producers[1].produced == [b"v"] and len(producers) == 2


def test_publish_after_a_fatal_error_uses_a_new_producer(
    publisher: KafkaEventPublisher, producers: list[StandInProducer]
) -> None:
    assert publisher.publish([record("a")], 5)[0].ok
    producers[0].fatal("simulated")
    (delivery,) = publisher.publish([record("b")], 5)
    assert delivery.ok
    assert [p.produced for p in producers] == [[b"a"], [b"b"]]


def test_replacement_waits_for_the_recovery_interval(
    publisher: KafkaEventPublisher, producers: list[StandInProducer]
) -> None:
    publisher.RECOVERY_INTERVAL = 60.0
    publisher.ready(1)
    producers[0].fatal("first")
    assert publisher.ready(1).ok is False  # replaced: the first recovery is immediate
    producers[1].fatal("again at once")
    readiness = publisher.ready(1)
    assert not readiness.ok and "again at once" in (readiness.reason or "")
    assert len(producers) == 2  # no new connection per request while it keeps failing


def test_non_fatal_errors_are_only_logged(
    publisher: KafkaEventPublisher, producers: list[StandInProducer]
) -> None:
    publisher.ready(1)
    producers[0].config["error_cb"](KafkaError(KafkaError._ALL_BROKERS_DOWN, "down"))
    assert publisher.ready(1).ok
    assert len(producers) == 1

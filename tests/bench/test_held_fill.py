"""The bench's held fill: a topic filled in an open transaction is invisible to the
worker's kind of consumer (read_committed) until released, then readable whole. The
multi-replica consumer figures depend on it: their group settles before any record can
be drained."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from bench.common import fill_topic


def count_readable(bootstrap: str, topic: str, group: str, seconds: float) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            seen += sum(1 for m in consumer.consume(500, 0.2) if m.error() is None)
    finally:
        consumer.close()
    return seen


def test_a_held_fill_is_readable_only_once_released(kafka_bootstrap: str, topic: str) -> None:
    fill = fill_topic(kafka_bootstrap, topic, 200, 0.05, held=True)
    assert fill.release is not None
    assert count_readable(kafka_bootstrap, topic, f"{topic}-before", 3.0) == 0
    fill.release()
    assert count_readable(kafka_bootstrap, topic, f"{topic}-after", 5.0) == 200


def test_a_plain_fill_is_readable_at_once(kafka_bootstrap: str, topic: str) -> None:
    fill = fill_topic(kafka_bootstrap, topic, 200, 0.05)
    assert fill.release is None
    assert count_readable(kafka_bootstrap, topic, f"{topic}-now", 5.0) == 200

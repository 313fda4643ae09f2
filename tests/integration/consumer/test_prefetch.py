"""The worker's Kafka consumer fetches ahead a bounded number of records.

What it holds fetched but not yet handed over is the part of the worker's memory that
grows with how far it falls behind (docs/performance.md, "Consumer memory"); librdkafka's
own defaults keep up to 100,000 records per partition. Read from librdkafka's statistics:
`fetchq_cnt` is the records fetched and waiting in the consumer's queue.
"""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import Consumer, Producer

from consumer_service.config import ConsumerSettings
from consumer_service.worker import consumer_config
from shared.events import compact_json, record_headers

from .conftest import make_record

RECORDS = 60_000
# CONSUMER_FETCH_DEFAULTS: 5,000 queued, plus what one fetch of 64 KiB per partition
# (lz4-compressed JSON, some 1,500 of these records each) adds on top.
MOST_QUEUED = 20_000


def _fill(bootstrap: str, topic: str) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"}
    )
    for i in range(RECORDS):
        record = make_record(user_id=f"user-{i % 500}", event_type="PRODUCT_VIEW")
        while True:
            try:
                producer.produce(
                    topic,
                    key=record["userId"].encode(),
                    value=compact_json(record),
                    headers=record_headers(record),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(30) == 0


def test_worker_consumer_prefetches_a_bounded_number_of_records(
    settings: ConsumerSettings, kafka_bootstrap: str, topic: str
) -> None:
    _fill(kafka_bootstrap, topic)
    queued: list[int] = []

    def stats(text: str) -> None:
        partitions: dict[str, Any] = json.loads(text)["topics"].get(topic, {})["partitions"]
        # The partitions' queues all forward to the consumer's one queue, and each counts
        # what that queue holds: the largest is the total.
        queued.append(max((p["fetchq_cnt"] for p in partitions.values()), default=0))

    consumer = Consumer(
        {**consumer_config(settings), "statistics.interval.ms": 100, "stats_cb": stats}
    )
    try:
        consumer.subscribe([settings.common.kafka_topic])
        taken = 0
        deadline = time.monotonic() + 30
        # Take records slowly, so the fetcher has all the time it wants to run ahead.
        while time.monotonic() < deadline and (taken < 100 or len(queued) < 20):
            taken += len(consumer.consume(10, 0.1))
        assert taken >= 100, "the consumer got no records"
        # The first statistics may predate the first fetch.
        assert max(queued) > 0
        assert max(queued) <= MOST_QUEUED, queued
    finally:
        consumer.close()

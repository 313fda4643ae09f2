"""The worker's Kafka consumer fetches ahead a bounded number of records.

What it holds fetched but not yet handed over is the part of the worker's memory that
grows with how far it falls behind (docs/performance.md, "Consumer memory"); librdkafka's
own defaults keep up to 100,000 records per partition. Read from librdkafka's statistics:
per partition, `next_offset` (the next offset to fetch) minus `app_offset` (the next one
the application gets) is what was fetched and not yet handed over. (`fetchq_cnt` was
tried first: it often reads 0 with records queued, as the partition queues forward to
the consumer's.)
"""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import Consumer, Producer

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.worker import consumer_config
from shared.events import record_headers
from shared.json_codec import compact_json

from .conftest import make_record

RECORDS = 60_000
# CONSUMER_FETCH_DEFAULTS: 5,000 queued per partition, plus what one fetch of 64 KiB per
# partition adds on top; measured at most ~26,000 over 3 partitions. librdkafka's
# defaults fetch the whole topic ahead (~59,000 of the 60,000 measured).
MOST_QUEUED = 40_000


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
        topics = json.loads(text)["topics"]
        partitions: dict[str, Any] = topics.get(topic, {}).get("partitions", {})
        queued.append(
            sum(
                p["next_offset"] - max(p["app_offset"], 0)  # before the first: -1001
                for name, p in partitions.items()
                if name != "-1" and p["next_offset"] >= 0
            )
        )

    consumer = Consumer(
        {**consumer_config(settings), "statistics.interval.ms": 100, "stats_cb": stats}
    )
    try:
        consumer.subscribe([settings.common.kafka_topic])
        taken = 0
        deadline = time.monotonic() + 30
        # Statistics taken before the first record arrived (the group join can outlast
        # twenty of them on a fresh broker) say nothing about the fetcher.
        fetching_from: int | None = None
        # Take records slowly, so the fetcher has all the time it wants to run ahead.
        while time.monotonic() < deadline and (
            fetching_from is None or len(queued) < fetching_from + 20
        ):
            taken += len(consumer.consume(10, 0.1))
            time.sleep(0.01)  # ~1,000 records/s: far slower than the fetcher
            if taken and fetching_from is None:
                fetching_from = len(queued)
        assert fetching_from is not None, "the consumer got no records"
        after = queued[fetching_from:]
        assert len(after) >= 20, "too few statistics after the first fetch"
        assert max(after) > 0
        assert max(after) <= MOST_QUEUED, after
    finally:
        consumer.close()

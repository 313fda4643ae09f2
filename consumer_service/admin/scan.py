"""Reading the dead-letter topic without disturbing the pipeline.

The scan assigns the DLQ's partitions explicitly (no group membership, no rebalance),
never commits an offset, and reads only up to the high watermarks taken at start, so
records appended meanwhile, by the worker or by a replay, are not read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumer_service.admin.kafka import existing_topic, kafka_config
from consumer_service.admin.record import DeadLetterRecord
from consumer_service.pipeline.dlq import normalise_headers
from shared.config import CommonSettings
from shared.errors import Unavailable
from shared.kafka import AuthenticationWatch, describe


class DlqScan:
    """The DLQ's records as they are at the moment of `open()`, partition by partition in
    offset order. A context manager; `total` is how many records lie ahead (an upper
    bound when `since_ms` is set, as timestamps need not grow with offsets). `connection`
    is the Kafka settings (a bare bootstrap address means PLAINTEXT)."""

    def __init__(
        self,
        connection: CommonSettings | str,
        topic: str,
        *,
        since_ms: int | None,
        timeout: float,
    ):
        self._connection = connection
        self._topic = topic
        self._since_ms = since_ms
        self._timeout = timeout
        self._consumer: Consumer | None = None
        self._ranges: dict[int, tuple[int, int]] = {}

    def __enter__(self) -> DlqScan:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def total(self) -> int:
        return sum(high - start for start, high in self._ranges.values())

    def open(self) -> None:
        """Fix the range to read: from the low watermark (or the first offset at or after
        `since_ms`) to the high watermark, per partition. Raises AdminError when the topic
        is missing, Unavailable when Kafka does not answer within the timeout,
        KafkaAuthenticationFailed (at once) when it refuses the credentials."""
        watch = AuthenticationWatch()
        consumer = self._consumer = self._new_consumer(watch)
        try:
            meta = existing_topic(
                consumer,
                self._connection,
                watch,
                self._timeout,
                self._topic,
                missing=f"the dead-letter topic {self._topic} does not exist",
                need_partitions=True,
            )
            partitions = sorted(meta.partitions)
            ranges = self._watermarks(consumer, partitions)
            if self._since_ms is not None:
                self._start_at(self._since_ms, consumer, partitions, ranges)
        except KafkaException as exc:
            raise Unavailable(
                f"Kafka at {describe(self._connection)} did not answer: {exc}"
            ) from exc
        self._ranges = {p: r for p, r in ranges.items() if r[0] < r[1]}

    def _new_consumer(self, watch: AuthenticationWatch) -> Consumer:
        return Consumer(
            kafka_config(
                self._connection,
                {
                    # Required by the client, never used: partitions are assigned, not
                    # subscribed, and no offset is ever committed, so this group never
                    # exists on the broker and the pipeline's own group is never touched.
                    "group.id": f"pipeline-admin-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "error_cb": watch,
                },
            )
        )

    def _watermarks(self, consumer: Consumer, partitions: list[int]) -> dict[int, tuple[int, int]]:
        ranges: dict[int, tuple[int, int]] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self._topic, p), timeout=self._timeout
            )
            ranges[p] = (low, high)
        return ranges

    def _start_at(
        self,
        since_ms: int,
        consumer: Consumer,
        partitions: list[int],
        ranges: dict[int, tuple[int, int]],
    ) -> None:
        """Move each range's start to the first offset at or after `since_ms`."""
        found = consumer.offsets_for_times(
            [TopicPartition(self._topic, p, since_ms) for p in partitions],
            timeout=self._timeout,
        )
        for tp in found:
            low, high = ranges[tp.partition]
            # A negative offset: no record that new in this partition.
            start = high if tp.offset < 0 else max(low, min(tp.offset, high))
            ranges[tp.partition] = (start, high)

    def __iter__(self) -> Iterator[DeadLetterRecord]:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("DlqScan.open() first")
        pending = dict(self._ranges)
        if not pending:
            return
        consumer.assign(
            [TopicPartition(self._topic, p, start) for p, (start, _) in pending.items()]
        )
        last_progress = time.monotonic()
        while pending:
            messages = consumer.consume(500, 0.5)
            if not messages and time.monotonic() - last_progress > self._timeout:
                raise Unavailable(
                    f"no record from {self._topic} for {self._timeout:.0f} s with "
                    f"{len(pending)} partition(s) still to read"
                )
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._done(pending, msg.partition())
                    elif err.fatal():
                        raise Unavailable(f"reading {self._topic} failed: {err}")
                    continue
                last_progress = time.monotonic()
                record = self._take(msg, pending)
                if record is not None and self._selected(record):
                    yield record

    def _take(self, msg: Any, pending: dict[int, tuple[int, int]]) -> DeadLetterRecord | None:
        """The record of `msg` when it lies in its partition's range, which it closes
        when it is the last one; None when it does not."""
        p = msg.partition()
        offset = int(msg.offset() or 0)
        if p not in pending or offset >= pending[p][1]:
            self._done(pending, p)  # appended after we started: not ours to read
            return None
        ts_type, ts = msg.timestamp()
        key = msg.key()
        record = DeadLetterRecord(
            partition=int(p or 0),
            offset=offset,
            timestamp_ms=ts if ts_type != 0 and ts >= 0 else None,
            key=key.encode() if isinstance(key, str) else key,
            value=msg.value(),
            headers=normalise_headers(msg.headers()),
        )
        if offset >= pending[p][1] - 1:
            self._done(pending, p)
        return record

    def _selected(self, record: DeadLetterRecord) -> bool:
        return self._since_ms is None or (
            record.timestamp_ms is not None and record.timestamp_ms >= self._since_ms
        )

    def _done(self, pending: dict[int, tuple[int, int]], partition: int | None) -> None:
        if partition in pending:
            del pending[partition]
            consumer = self._consumer
            if consumer is not None:
                consumer.incremental_unassign([TopicPartition(self._topic, partition)])

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

"""What the worker tells the outside about itself: its state in the status file (the
read API's /ready) and the lag gauge of its partitions (/metrics)."""

from __future__ import annotations

import logging
import time
from collections.abc import Set

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer_service import metrics
from consumer_service.pipeline.batch import TP
from consumer_service.pipeline.status import StatusFile, WorkerState, WorkerStatus

log = logging.getLogger(__name__)


class Health:
    """The worker's published state and its detail; the only writer of the status file.
    Main thread only."""

    def __init__(self, status_file: StatusFile | None, assigned: Set[TP]) -> None:
        self._status_file = status_file
        # A live view of the assignment, for the partition count in the heartbeat.
        self._assigned = assigned
        self.state: WorkerState = "starting"
        self.detail = ""

    def set(self, state: WorkerState, detail: str = "") -> None:
        """Publish a new state at once."""
        self.state = state
        self.detail = detail
        self.heartbeat(force=True)

    def heartbeat(self, force: bool = False) -> None:
        """Rewrite the status file (at most once a second unless `force`d or the state
        changed). A file that cannot be written is logged, never raised."""
        if self._status_file is None:
            return
        try:
            self._status_file.write(
                WorkerStatus(self.state, time.time(), len(self._assigned), self.detail),
                force=force,
            )
        except OSError as exc:
            log.warning("cannot write the worker status file", extra={"error": str(exc)})


class LagGauge:
    """consumer_lag per assigned partition: high watermark minus position, at most once
    a second, from librdkafka's cached watermarks (no broker round trip)."""

    def __init__(self) -> None:
        self._last = 0.0

    def update(self, consumer: Consumer, assigned: Set[TP]) -> None:
        now = time.monotonic()
        if now - self._last < 1.0 or not assigned:
            return
        self._last = now
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in assigned])
            for tp in positions:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                        max(0, high - tp.offset)
                    )
        except KafkaException as exc:
            log.debug("lag not available", extra={"error": str(exc)})

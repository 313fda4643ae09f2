"""Staying in the group while Redis or the DLQ is away.

Between two attempts of a store that failed, the worker waits with its partitions
paused while still calling poll(), so heartbeats, rebalances and max.poll.interval.ms are
served: it stays a live member that consumes nothing and commits nothing.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, TopicPartition

from consumer_service import metrics
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.health import Health
from consumer_service.pipeline.offsets import Offsets
from consumer_service.pipeline.processing import backoff_delay
from consumer_service.storage import StoreRefused
from shared.errors import Unavailable

log = logging.getLogger(__name__)


class Backoff:
    """The waits between a store's attempts; the only owner of the "partitions paused"
    state. Main thread only; `attach` the consumer first."""

    def __init__(
        self, settings: ConsumerSettings, offsets: Offsets, health: Health, stop: threading.Event
    ) -> None:
        self._settings = settings
        self._offsets = offsets
        self._health = health
        self._stop = stop
        self._consumer: Consumer | None = None
        self._paused = False

    def attach(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def wait(self, retries: int, exc: Unavailable) -> bool:
        """After a failed attempt (the `retries`-th retry, 0 for the first attempt):
        counted, logged, published as "backing_off", then the backoff delay waited out
        paused. False when a stop was requested meanwhile."""
        s = self._settings
        metrics.BATCH_RETRIES.inc()
        delay = backoff_delay(retries, s.backoff_initial_seconds, s.backoff_max_seconds)
        # A refusal (a wrong-type key, named in the error) lasts until fixed by hand.
        level = logging.ERROR if isinstance(exc, StoreRefused) else logging.WARNING
        log.log(
            level,
            "batch not durable, retrying",
            extra={"error": str(exc), "attempt": retries + 1, "retry_in_s": delay},
        )
        self._health.set("backing_off", str(exc))
        return self._wait_paused(delay)

    def resume(self) -> None:
        """A store answered: consume the assigned partitions again, if they were paused."""
        if self._paused:
            consumer = self._require_consumer()
            consumer.resume([TopicPartition(t, p) for t, p in self._offsets.assigned])
            self._paused = False

    def _wait_paused(self, delay: float) -> bool:
        """Sleep `delay` seconds while staying a live group member: partitions paused,
        poll() called so heartbeats, rebalances and max.poll.interval.ms are served.
        False when a stop was requested."""
        consumer = self._require_consumer()
        if not self._paused:
            consumer.pause([TopicPartition(t, p) for t, p in self._offsets.assigned])
            self._paused = True
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._health.heartbeat()
            msg = consumer.poll(min(remaining, 0.5))
            if msg is not None and msg.error() is None:
                # From a partition assigned during the pause: put it back, hold it.
                topic, partition = str(msg.topic()), msg.partition() or 0
                consumer.seek(TopicPartition(topic, partition, msg.offset() or 0))
                consumer.pause([TopicPartition(topic, partition)])
        return False

    def _require_consumer(self) -> Consumer:
        assert self._consumer is not None, "attached before the first wait"
        return self._consumer

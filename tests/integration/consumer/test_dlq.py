"""The Kafka dead-letter queue on its own: a full local queue waits for room (or gives
up as Unavailable), and every letter it reports sent is on the DLQ topic."""

from __future__ import annotations

import time

import pytest

from consumer_service.config import ConsumerSettings
from consumer_service.dlq import DeadLetter, KafkaDeadLetterQueue
from shared.errors import Unavailable

from .test_worker import read_dlq

# Room for two records in the producer's local queue: the third produce() of a send
# finds it full.
TINY_QUEUE = {"queue.buffering.max.messages": 2}


def letters(n: int) -> list[DeadLetter]:
    return [
        DeadLetter(b"k", b"garbage %d" % i, (), "not_json", "bad", "src", 0, i) for i in range(n)
    ]


def test_a_full_queue_waits_for_room_and_every_letter_lands(settings: ConsumerSettings) -> None:
    dlq = KafkaDeadLetterQueue(
        settings.common.kafka_bootstrap_servers, settings.dlq_topic, "g", 10.0, TINY_QUEUE
    )
    try:
        dlq.send(letters(10))
    finally:
        dlq.close()
    got = read_dlq(settings, 10)
    assert sorted(int(dict(m.headers())["dlq.source.offset"]) for m in got) == list(range(10))


def test_a_queue_that_stays_full_is_unavailable_after_the_flush_timeout() -> None:
    # Finding 6: the second BufferError (queue still full after one flush, because the
    # broker is away) used to escape send() and kill the worker.
    # Queued records outlive the flush timeout, so a flush cannot make room either.
    config = {**TINY_QUEUE, "message.timeout.ms": 60_000}
    dlq = KafkaDeadLetterQueue("127.0.0.1:1", "nowhere.dlq", "g", 0.5, config)
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="queue stayed full"):
            dlq.send(letters(5))
        assert time.monotonic() - started < 3
    finally:
        dlq.close()

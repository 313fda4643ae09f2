"""The dead-letter topic: where poison records go, with headers saying why.

A dead-lettered record keeps its original key, value and headers, so it can be inspected
or replayed as it was, and gains:

    dlq.error             the human-readable reason
    dlq.error.type        too_large | not_json | invalid_schema
    dlq.source.topic      where it came from
    dlq.source.partition
    dlq.source.offset
    dlq.consumer.group    which group gave up on it
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from shared.errors import Unavailable

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]
OriginalHeaders = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class DeadLetter:
    """One poison record to dead-letter: the original bytes plus why."""

    key: bytes | None
    value: bytes | None
    headers: OriginalHeaders
    reason: str
    message: str
    topic: str
    partition: int
    offset: int


def dlq_headers(letter: DeadLetter, group: str) -> Headers:
    """The original headers followed by the dlq.* ones."""
    # Error messages can quote the record; bounded so a header never dwarfs the record.
    return [
        *letter.headers,
        ("dlq.error", letter.message[:1000].encode()),
        ("dlq.error.type", letter.reason.encode()),
        ("dlq.source.topic", letter.topic.encode()),
        ("dlq.source.partition", str(letter.partition).encode()),
        ("dlq.source.offset", str(letter.offset).encode()),
        ("dlq.consumer.group", group.encode()),
    ]


class DeadLetterQueue(Protocol):
    """Sends poison records to the dead-letter topic."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Produce every letter and block until the broker acknowledged all of them.
        Raises `Unavailable` when any was not acknowledged in time; the caller retries
        the whole list (so the DLQ is at-least-once)."""
        ...

    def close(self) -> None: ...


class KafkaDeadLetterQueue:
    """DeadLetterQueue on a confluent-kafka Producer, created on first use."""

    def __init__(self, bootstrap: str, topic: str, group: str, flush_timeout: float) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._group = group
        self._flush_timeout = flush_timeout
        self._producer: Producer | None = None

    def _get(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": self._bootstrap,
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    # Leave the delivery verdict to our flush timeout and retry.
                    "message.timeout.ms": int(self._flush_timeout * 1000),
                }
            )
        return self._producer

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        producer = self._get()
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for letter in letters:
            headers = dlq_headers(letter, self._group)
            try:
                producer.produce(
                    self._topic,
                    key=letter.key,
                    value=letter.value,
                    headers=headers,
                    on_delivery=on_delivery,
                )
            except BufferError:
                producer.flush(self._flush_timeout)
                producer.produce(
                    self._topic,
                    key=letter.key,
                    value=letter.value,
                    headers=headers,
                    on_delivery=on_delivery,
                )
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise Unavailable(f"DLQ produce failed: {exc}") from exc
                # Bigger than the producer may send: keep the facts, drop the bytes,
                # rather than retrying forever.
                producer.produce(
                    self._topic,
                    key=letter.key,
                    value=None,
                    headers=[*headers, ("dlq.value.dropped", b"true")],
                    on_delivery=on_delivery,
                )
        remaining = producer.flush(self._flush_timeout)
        if remaining or failures:
            raise Unavailable(
                f"DLQ did not acknowledge {remaining + len(failures)} record(s): {failures[:3]}"
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._flush_timeout)
            self._producer = None

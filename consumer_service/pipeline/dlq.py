"""The dead-letter topic: where poison records go, with headers saying why.

A dead-lettered record keeps its original key, value and headers, so it can be inspected
or replayed as it was, and gains:

    dlq.error             the human-readable reason
    dlq.error.type        too_large | not_json | invalid_schema | unknown_event_type |
                          processing_error
    dlq.source.topic      where it came from
    dlq.source.partition
    dlq.source.offset
    dlq.consumer.group    which group gave up on it
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from shared.config import CommonSettings
from shared.errors import PipelineError, Unavailable
from shared.kafka import client_config

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]
OriginalHeaders = tuple[tuple[str, bytes], ...]
# What confluent-kafka's Message.headers() returns.
RawHeaders = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]]


# Broker verdicts on one record that no retry can change: the record (or the DLQ topic's
# configuration, or our permissions) must change first.
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_EXCEPTION,
    }
)

HEADER_ERROR_MAX_BYTES = 1000


class DeadLetterRejected(PipelineError):
    """The DLQ topic refused a record for good (too large for the topic, not authorised,
    ...). Not retried: the worker stops with a clear error."""


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


def normalise_headers(raw: RawHeaders | None) -> OriginalHeaders:
    """A consumed record's headers as `DeadLetter.headers` holds them: `(name, bytes)`
    pairs in their order, whether confluent-kafka gave a list or a dict; a str value is
    UTF-8 encoded, a missing value (None) becomes empty bytes, no headers an empty tuple."""
    items = raw.items() if isinstance(raw, Mapping) else (raw or ())
    return tuple((k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in items)


def dlq_headers(letter: DeadLetter, group: str) -> Headers:
    """The original headers followed by the dlq.* ones."""
    return [
        *letter.headers,
        ("dlq.error", _bounded_utf8(letter.message, HEADER_ERROR_MAX_BYTES)),
        ("dlq.error.type", letter.reason.encode()),
        ("dlq.source.topic", letter.topic.encode()),
        ("dlq.source.partition", str(letter.partition).encode()),
        ("dlq.source.offset", str(letter.offset).encode()),
        ("dlq.consumer.group", group.encode()),
    ]


def _bounded_utf8(text: str, limit: int) -> bytes:
    # Error messages can quote the record: unpaired surrogates become backslash escapes
    # (they cannot be UTF-8), and the length is bounded so a header never dwarfs the
    # record, cut on a character boundary.
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


class DeadLetterQueue(Protocol):
    """Sends poison records to the dead-letter topic."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Produce every letter and block until the broker acknowledged all of them.
        Raises `Unavailable` when any was not acknowledged in time; the caller retries
        the whole list (so the DLQ is at-least-once). Raises `DeadLetterRejected` when
        the broker refused one for good; the caller must not retry."""
        ...

    def close(self) -> None: ...


class KafkaDeadLetterQueue:
    """DeadLetterQueue on a confluent-kafka Producer, created on first use.

    `connection` is the Kafka settings (a bare bootstrap address means PLAINTEXT);
    `config` adds or overrides producer properties other than the connection's."""

    def __init__(
        self,
        connection: CommonSettings | str,
        topic: str,
        group: str,
        flush_timeout: float,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._connection = connection
        self._topic = topic
        self._group = group
        self._flush_timeout = flush_timeout
        self._config = dict(config or {})
        self._producer: Producer | None = None

    def _get(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                client_config(
                    self._connection,
                    {
                        "acks": "all",
                        "enable.idempotence": True,
                        "linger.ms": 5,
                        # Leave the delivery verdict to our flush timeout and retry.
                        "message.timeout.ms": int(self._flush_timeout * 1000),
                        **self._config,
                    },
                )
            )
        return self._producer

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        producer = self._get()
        deadline = time.monotonic() + self._flush_timeout
        failures: list[str] = []
        refused: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                return
            if err.fatal() or err.code() in PERMANENT_ERRORS:
                refused.append(f"{err} (source offset {_source_offset(msg)})")
            else:
                failures.append(str(err))

        for letter in letters:
            headers = dlq_headers(letter, self._group)
            try:
                self._produce(producer, letter.key, letter.value, headers, on_delivery, deadline)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise Unavailable(f"DLQ produce failed: {exc}") from exc
                # Bigger than the producer may send: keep the facts, drop the bytes,
                # rather than retrying forever.
                self._produce(
                    producer,
                    letter.key,
                    None,
                    [*headers, ("dlq.value.dropped", b"true")],
                    on_delivery,
                    deadline,
                )
        remaining = producer.flush(max(0.0, deadline - time.monotonic()))
        if refused:
            # Retrying would fail the same way forever while the partition stands still
            # and nothing says why; skipping the record would lose it (the DLQ is its last
            # home). So stop loudly: the operator fixes the DLQ topic (max.message.bytes,
            # ACLs) and the restarted worker dead-letters the batch again.
            raise DeadLetterRejected(
                f"the DLQ topic {self._topic} refused {len(refused)} record(s) for good: "
                f"{refused[:3]}"
            )
        if remaining or failures:
            raise Unavailable(
                f"DLQ did not acknowledge {remaining + len(failures)} record(s): {failures[:3]}"
            )

    def _produce(
        self,
        producer: Producer,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        on_delivery: Any,
        deadline: float,
    ) -> None:
        """produce(), waiting (while serving delivery reports) for room in the local queue
        until `deadline`; raises Unavailable when the queue stays full that long, e.g.
        because the broker does not take what is queued."""
        while True:
            try:
                producer.produce(
                    self._topic, key=key, value=value, headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(
                        "the DLQ producer's queue stayed full for the flush timeout"
                    ) from None
                producer.poll(min(remaining, 0.1))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._flush_timeout)
            self._producer = None


def _source_offset(msg: Any) -> str:
    for name, value in (msg.headers() if msg is not None else None) or []:
        if name == "dlq.source.offset" and isinstance(value, bytes):
            return value.decode("ascii", "replace")
    return "?"

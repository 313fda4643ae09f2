"""Replaying the dead-letter topic into the main topic.

The contract:

* A selected record is checked with the consumer's own rules (`processing.decide`) first.
  One that still fails is NOT published: it stays where it is, in the DLQ with its
  original reason, and is reported. It is not written to the DLQ again, so the DLQ does
  not grow on every run and a later run does not see it twice.
* One that passes is produced to the main topic with its key, value (so its eventId) and
  original headers, without the dlq.* ones, plus `replay.attempt` (1 on its first replay).
  Idempotent producer, acks=all. The consumer dedups by eventId, so replaying a record
  twice stores its event once (within CONSUMER_DEDUP_TTL_SECONDS).
* A dead letter that holds only part of its original (`dlq.cut`: the key, value or some
  headers were left out to fit the DLQ, or it holds only the facts) is NOT published
  either: replaying it would store something other than what was written. It stays, and
  is reported with its source topic, partition and offset, where the original can be read
  while the topic retains it.
* A replayed record the consumer still rejects (its settings differ from the ones the
  replay checked with) is dead-lettered by the consumer with its `replay.attempt` kept
  among the original headers. Such a record is not replayed again once it reached
  `--max-attempts`, so no record cycles between the topics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from consumer_service.admin.kafka import existing_topic, kafka_config
from consumer_service.admin.record import REPLAY_ATTEMPT, DeadLetterRecord
from consumer_service.pipeline.processing import Decision, Rejected, decide_safely
from shared.config import CommonSettings
from shared.kafka import AuthenticationWatch

DEFAULT_MAX_ATTEMPTS = 3

# How many of the records left in the DLQ are named one by one in the report.
LEFT_LISTED = 20


@dataclass
class ReplayReport:
    """What a replay did. `published` counts records the broker acknowledged (or, under
    --dry-run, records that would have been published). `left` names the first
    LEFT_LISTED records left in the DLQ, each with why."""

    selected: int = 0
    published: int = 0
    still_failing: Counter[str] = field(default_factory=Counter)
    gave_up: int = 0
    incomplete: int = 0
    unacknowledged: int = 0
    left: list[tuple[DeadLetterRecord, str]] = field(default_factory=list)

    @property
    def left_in_dlq(self) -> int:
        return sum(self.still_failing.values()) + self.gave_up + self.incomplete

    def note_left(self, rec: DeadLetterRecord, why: str) -> None:
        if len(self.left) < LEFT_LISTED:
            self.left.append((rec, why))


def check(rec: DeadLetterRecord, max_bytes: int, event_types: Set[str]) -> Decision:
    """The consumer's verdict on the record today, with the worker's own safety net: rules
    that raise mean `processing_error`, as they would in the worker."""
    partition = rec.source_partition if rec.source_partition is not None else rec.partition
    offset = rec.source_offset if rec.source_offset is not None else rec.offset
    return decide_safely(rec.value, partition, offset, max_bytes, event_types)


class Republisher:
    """An idempotent acks=all producer to the main topic that counts acknowledgements."""

    def __init__(self, connection: CommonSettings | str, topic: str, timeout: float) -> None:
        self._topic = topic
        self._timeout = timeout
        self.acknowledged = 0
        self.failed: list[str] = []
        self._producer = Producer(
            kafka_config(
                connection,
                {
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.timeout.ms": int(timeout * 1000),
                },
            )
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.acknowledged += 1
        else:
            self.failed.append(str(err))

    def publish(self, rec: DeadLetterRecord) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            *rec.original_headers(),
            (REPLAY_ATTEMPT, str(rec.replay_attempt + 1).encode()),
        ]
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    key=rec.key,
                    value=rec.value,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: serve deliveries, then retry
            except KafkaException as exc:
                self.failed.append(str(exc))
                return
        self._producer.poll(0)

    def finish(self) -> int:
        """Wait for every acknowledgement; returns how many records were not delivered."""
        remaining = int(self._producer.flush(self._timeout))
        return remaining + len(self.failed)


def require_topic(connection: CommonSettings | str, topic: str, timeout: float) -> None:
    """Replaying into a topic that does not exist would fail record by record (the broker
    does not auto-create topics); say so once, before anything is published. Raises
    AdminError when it is missing, Unavailable when Kafka does not answer."""
    watch = AuthenticationWatch()
    admin = AdminClient(kafka_config(connection, {"error_cb": watch}))
    existing_topic(
        admin,
        connection,
        watch,
        timeout,
        topic,
        missing=f"the topic {topic} does not exist; nothing was replayed",
    )


def replay(
    scan: Iterable[DeadLetterRecord],
    *,
    reason: str | None,
    max_bytes: int,
    event_types: Set[str],
    max_attempts: int,
    publisher: Republisher | None,
    advance: Callable[[], object],
) -> ReplayReport:
    """Re-publish the scan's records that the consumer's rules accept today (all of them
    counted, none published, when `publisher` is None: the dry run). Calls `advance`
    once per record read."""
    report = ReplayReport()
    for rec in scan:
        advance()
        if reason is not None and rec.reason != reason:
            continue
        report.selected += 1
        if _stays(rec, report, max_bytes, event_types, max_attempts):
            continue
        if publisher is None:
            report.published += 1
        else:
            publisher.publish(rec)
    if publisher is not None:
        report.unacknowledged = publisher.finish()
        report.published = publisher.acknowledged
    return report


def _stays(
    rec: DeadLetterRecord,
    report: ReplayReport,
    max_bytes: int,
    event_types: Set[str],
    max_attempts: int,
) -> bool:
    """True when `rec` is left in the DLQ (counted and noted in `report`)."""
    if rec.cut:
        report.incomplete += 1
        source = f"{rec.source_topic}:{rec.source_partition} offset {rec.source_offset}"
        parts = ", ".join(rec.cut)
        report.note_left(
            rec, f"holds only part of the original ({parts} cut); the original is at {source}"
        )
        return True
    if rec.replay_attempt >= max_attempts:
        report.gave_up += 1
        report.note_left(rec, f"replayed {rec.replay_attempt} time(s) already")
        return True
    verdict = check(rec, max_bytes, event_types)
    if isinstance(verdict, Rejected):
        report.still_failing[verdict.reason] += 1
        report.note_left(rec, f"still {verdict.reason}: {verdict.message}")
        return True
    return False

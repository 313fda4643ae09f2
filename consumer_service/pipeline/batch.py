"""A batch: the records of one fetch, each decided, on their way to a commit.

`decide_batch` turns the fetched records into a `Batch` (step 3 of the worker's batch
path); `Batch` carries them to the commit. Pure of I/O: no Kafka call, no Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence, Set
from concurrent.futures import Future
from dataclasses import dataclass, field

from confluent_kafka import Message

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.dlq import DeadLetter, normalise_headers
from consumer_service.pipeline.processing import (
    Accepted,
    PoisonWindow,
    Rejected,
    decide_safely,
)
from consumer_service.storage import BatchResult
from shared.errors import PipelineError

log = logging.getLogger(__name__)

TP = tuple[str, int]

POISON_RUNBOOK = 'see "Getting out of a poison flood" in docs/consumer.md'


class PoisonLimitExceeded(PipelineError):
    """Too many poison records in the window: stop instead of draining the topic."""


@dataclass(eq=False)
class Batch:
    """One batch from `decide_batch` to its commit: what to store, what to dead-letter,
    the offset after each partition's last record (what a commit of this batch writes),
    and how far it got. Owned by the main thread; the store thread only reads the
    `accepted` list it was handed, which is never changed afterwards (a retry hands on a
    new list)."""

    accepted: list[Accepted] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[TP, int] = field(default_factory=dict)
    # Partitions revoked or lost since the batch was consumed (written only by
    # `Flight.revoke`). Even if one comes back before the batch is durable, the batch's
    # records of it may have been dropped, so they are not stored any more and must not
    # advance its offset.
    revoked: set[TP] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    # Its place in this worker's sequence of stores (a `Chain` number), from its start.
    number: int = 0
    dlq_done: bool = False
    # The store attempt handed to the store thread (or a failed one, already answered).
    attempt: Future[BatchResult] | None = None
    # Retries of the store before it answered (0 when the first attempt did).
    retries: int = 0

    def keep_owned(self, topic: str, assigned: Set[TP]) -> None:
        """Before a retry: forget the records of partitions that left meanwhile (not in
        `assigned`, or in `revoked`). Hands the store thread a new list."""
        keep = assigned - self.revoked
        self.accepted = [a for a in self.accepted if (topic, a.partition) in keep]
        self.letters = [x for x in self.letters if (x.topic, x.partition) in keep]


def dead_letter(msg: Message, decision: Rejected) -> DeadLetter:
    """The DeadLetter of a consumed message: its original key, value and headers."""
    key = msg.key()
    return DeadLetter(
        key=key.encode() if isinstance(key, str) else key,
        value=msg.value(),
        headers=normalise_headers(msg.headers()),
        reason=decision.reason,
        message=decision.message,
        topic=str(msg.topic()),
        partition=decision.partition,
        offset=decision.offset,
    )


def decide_batch(
    messages: Sequence[Message], guard: PoisonWindow, settings: ConsumerSettings
) -> Batch:
    """Each record (of `settings`' topic, without an error) Accepted or dead-lettered, in
    order. Raises PoisonLimitExceeded when the guard trips: then nothing of this batch
    is sent, stored or committed."""
    out = Batch()
    accept = out.accepted.append
    max_bytes = settings.max_message_bytes
    event_types = settings.event_types
    topic = settings.common.kafka_topic

    def undecidable(exc: Exception, partition: int, offset: int) -> None:
        log.error(
            "unexpected error deciding a record; dead-lettering it",
            exc_info=exc,
            extra={"topic": topic, "partition": partition, "offset": offset},
        )

    for msg in messages:
        # Never None on a message without an error.
        partition = msg.partition() or 0
        offset = msg.offset() or 0
        decision = decide_safely(
            msg.value(), partition, offset, max_bytes, event_types, undecidable
        )
        poison = type(decision) is not Accepted
        if guard.record(poison):
            raise PoisonLimitExceeded(
                f"{guard.poison_count} of the last {settings.poison_window} records were "
                f"poison (limit {settings.poison_max_share:.0%}); {POISON_RUNBOOK}"
            )
        if poison:
            assert isinstance(decision, Rejected)
            out.letters.append(dead_letter(msg, decision))
        else:
            assert isinstance(decision, Accepted)
            accept(decision)
        out.next_offsets[(topic, partition)] = offset + 1
    return out

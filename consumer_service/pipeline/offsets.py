"""What is safe to commit: the assignment and the durable offsets not yet committed.

`Offsets` is the only owner of both. An offset enters it only when its batch's store
answered (`mark_durable`), for a partition this member still owns and that did not leave
since the batch was consumed; it leaves when the broker confirmed a commit of it, or
when its partition leaves (then the next owner starts from the last commit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence, Set

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer_service import metrics
from consumer_service.pipeline.batch import TP, Batch

log = logging.getLogger(__name__)


class Offsets:
    """The partitions assigned to this member and their durable, uncommitted offsets.
    Used on the main thread only (rebalance and commit callbacks run inside consume(),
    poll() and close(), on the main thread too). `attach` the consumer before any commit."""

    def __init__(self) -> None:
        self._consumer: Consumer | None = None
        # Changed in place, never rebound: `assigned` hands out a live view of it.
        self._assigned: set[TP] = set()
        # Durable but not known to be committed: next offset per partition.
        self._uncommitted: dict[TP, int] = {}

    def attach(self, consumer: Consumer) -> None:
        """The consumer whose group the commits go to."""
        self._consumer = consumer

    @property
    def assigned(self) -> Set[TP]:
        """The partitions this member owns now (a live view: do not change it)."""
        return self._assigned

    @property
    def pending(self) -> bool:
        """True while some durable offset is not known to be committed."""
        return bool(self._uncommitted)

    def assign(self, tps: Iterable[TP]) -> None:
        """Partitions the group gave this member."""
        self._assigned |= set(tps)
        metrics.ASSIGNED_PARTITIONS.set(len(self._assigned))

    def forget(self, tps: Set[TP]) -> None:
        """Partitions that left (revoked or lost): no longer owned, nothing of theirs left
        to commit, and their lag reported as 0 (another member reports it now)."""
        self._assigned -= tps
        for tp in tps:
            self._uncommitted.pop(tp, None)
            metrics.CONSUMER_LAG.labels(tp[0], str(tp[1])).set(0)
        metrics.ASSIGNED_PARTITIONS.set(len(self._assigned))

    def owned(self, messages: Sequence[Message]) -> list[Message]:
        """The records of partitions this member still owns. A rebalance served inside
        consume() may have revoked partitions whose records are already in hand; their
        new owner reads them from the committed offset. A fatal error raises."""
        assigned = self._assigned
        owned: list[Message] = []
        for msg in messages:
            err = msg.error()
            if err is None:
                if (msg.topic(), msg.partition()) in assigned:
                    owned.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer error", extra={"error": str(err), "topic": msg.topic()})
        return owned

    def mark_durable(self, batch: Batch) -> None:
        """The batch's store answered: its offsets of partitions it still owns are due a
        commit (never moving an offset back)."""
        uncommitted = self._uncommitted
        for tp, offset in batch.next_offsets.items():
            owned = tp in self._assigned and tp not in batch.revoked
            if owned and offset > uncommitted.get(tp, 0):
                uncommitted[tp] = offset

    def commit_batch(self, batch: Batch) -> None:
        """Commit a durable batch's offsets without waiting for the broker. Safe: a
        commit lost on the way only replays the batch, which the seen marks make
        harmless; partitions that leave are committed synchronously (on revoke, on close)."""
        self.mark_durable(batch)
        self.commit(asynchronous=True)

    def commit(self, only: Set[TP] | None = None, *, asynchronous: bool = False) -> None:
        """Commit the durable offsets (all, or those of `only`). Synchronous unless asked:
        then `on_commit` settles them. A failure is logged and retried with the next
        commit: replaying is harmless. Never raises KafkaException."""
        pending = {tp: o for tp, o in self._uncommitted.items() if only is None or tp in only}
        if not pending:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
        assert self._consumer is not None, "attached before the first commit"
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._settle(self._consumer.commit(offsets=offsets, asynchronous=False) or [])
        except KafkaException as exc:
            log.warning(
                "offset commit failed; the batch may be replayed", extra={"error": str(exc)}
            )

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's on_commit callback: the answer to an asynchronous commit."""
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning(
                "offset commit failed; the batch may be replayed", extra={"error": str(err)}
            )
            return
        self._settle(partitions)

    def _settle(self, partitions: Sequence[TopicPartition]) -> None:
        """Forget the offsets the broker confirmed (unless a later batch moved them on)."""
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if tp.error is not None:
                log.warning(
                    "offset commit failed",
                    extra={"topic": tp.topic, "partition": tp.partition, "error": str(tp.error)},
                )
            elif self._uncommitted.get(key) == tp.offset:
                del self._uncommitted[key]

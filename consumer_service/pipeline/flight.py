"""The batches in hand and their stores in flight, kept in order.

`Flight` is the only owner of both lists, of each batch's place in the store chain and
of the store threads. Batches are stored oldest first: with two stores in flight the
younger one is chained after the older (`Chain`), so its script writes nothing before
the older batch is stored; a fenced batch is sent again, and waited for, before the next
is chained after it.
"""

from __future__ import annotations

import uuid
from collections import Counter as Tally
from collections.abc import Set
from concurrent.futures import Future, ThreadPoolExecutor

from consumer_service.pipeline.batch import TP, Batch
from consumer_service.pipeline.dlq import DeadLetterQueue
from consumer_service.pipeline.offsets import Offsets
from consumer_service.storage import BatchResult, Chain, EventStore, StoreFenced
from shared.errors import Unavailable
from shared.events import utc_timestamp


class Flight:
    """Batches consumed and not yet committed or dropped (at most `depth` + 1: those
    whose store is in flight or being retried, one decided and waiting), and among them
    the stores started and not yet finished, oldest first. Main thread only; the store
    threads run `store_batch` and nothing else. `open()` before the first store,
    `close()` at the end."""

    def __init__(
        self, store: EventStore, dlq: DeadLetterQueue, depth: int, offsets: Offsets, topic: str
    ) -> None:
        self._store = store
        self._dlq = dlq
        self._depth = depth
        # Read only: which partitions a retry may still store.
        self._offsets = offsets
        self._topic = topic
        self._in_hand: list[Batch] = []
        self._flight: list[Batch] = []
        # This run's name and batch count in the store's chain (used when depth > 1).
        self._writer = uuid.uuid4().hex
        self._numbered = 0
        # Run the store scripts, `depth` at a time.
        self._threads: ThreadPoolExecutor | None = None

    def open(self) -> None:
        """Start the store threads."""
        self._threads = ThreadPoolExecutor(max_workers=self._depth, thread_name_prefix="store")

    def close(self) -> None:
        """Wait for the store threads to end."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)

    @property
    def busy(self) -> bool:
        """A store is in flight (or being retried): a result is due."""
        return bool(self._flight)

    @property
    def full(self) -> bool:
        """No room for another store until the oldest finished."""
        return len(self._flight) == self._depth

    @property
    def oldest(self) -> Batch:
        """The batch whose store finishes next (only while `busy`)."""
        return self._flight[0]

    def hold(self, batch: Batch) -> None:
        """A batch was decided: it is in hand until `landed`/`drop`."""
        self._in_hand.append(batch)

    def start(self, batch: Batch) -> None:
        """The batch's first attempt, with fewer than `depth` stores in flight. With one
        in flight already, the store is chained after it: the script writes nothing
        before the earlier batch is stored, so batches are stored in order (the seen
        marks' first-wins rule and each user's order depend on it)."""
        assert len(self._flight) < self._depth, "no room for another store"
        if batch.revoked:
            # Partitions left while the store before this one was retried.
            batch.keep_owned(self._topic, self._offsets.assigned)
        self._numbered += 1
        batch.number = self._numbered
        self._flight.append(batch)
        batch.attempt = self._attempt(batch)

    def retry(self, batch: Batch) -> None:
        """Another attempt for a batch in flight whose last one failed, without the
        records of partitions that left meanwhile."""
        batch.keep_owned(self._topic, self._offsets.assigned)
        batch.attempt = self._attempt(batch)

    def resend_fenced(self) -> None:
        """The oldest batch in flight, if it already came back FENCED (it reached Redis
        before the batch before it was stored, which now is): send it again, and wait
        until Redis answered. Chained after the attempt that is over, the next batch
        would be fenced in turn, and the one after it, as long as batches keep coming;
        sent while the new attempt is on its way, it could overtake it on its own
        connection. A failure of the new attempt is left to the worker's finish step."""
        head = self._flight[0] if self._flight else None
        if head is None or head.attempt is None or not head.attempt.done():
            return
        if isinstance(head.attempt.exception(), StoreFenced):
            self.retry(head)
            head.attempt.exception()  # waits

    def landed(self, batch: Batch) -> None:
        """The oldest store answered: the batch leaves the flight (still in hand until
        its commit, so a revoke before it still marks it)."""
        self._flight.remove(batch)

    def drop(self, batch: Batch) -> None:
        """The batch leaves the worker's hands (committed, or left for a replay)."""
        if batch in self._flight:
            self._flight.remove(batch)
        if batch in self._in_hand:
            self._in_hand.remove(batch)

    def revoke(self, tps: Set[TP]) -> None:
        """Partitions left: every batch in hand stores and commits nothing more of them."""
        for batch in self._in_hand:
            batch.revoked |= tps

    def answered(self) -> list[tuple[Batch, BatchResult]]:
        """Wait until every store in flight answered (a rebalance or a stop must not let
        one write after the partitions left). Returns the batches that succeeded, up to
        the first that did not, with their results, oldest first: they are durable. A
        failed store is left for the worker's finish step to retry, and so is every
        batch after it: their offsets are past its records. Never raises."""
        for batch in self._flight:
            if batch.attempt is not None:
                batch.attempt.exception()  # waits
        done: list[tuple[Batch, BatchResult]] = []
        for batch in self._flight:
            if batch.attempt is None or batch.attempt.exception() is not None:
                break
            done.append((batch, batch.attempt.result()))
        return done

    def _chain(self, batch: Batch) -> Chain | None:
        """The batch's place in the chain: after the batch before it while that one is
        still in flight, after nothing once it is the oldest."""
        if self._depth == 1:
            return None
        at = self._flight.index(batch)
        return Chain(self._writer, batch.number, self._flight[at - 1].number if at else 0)

    def _attempt(self, batch: Batch) -> Future[BatchResult]:
        """One try at making the batch durable: its dead letters sent and acknowledged
        (here, on the main thread), then its store handed to a store thread. A failure
        of either comes back through the returned future (`DeadLetterRejected` is
        raised)."""
        if not batch.dlq_done:
            try:
                if batch.letters:
                    self._dlq.send(batch.letters)
                batch.dlq_done = True
            except Unavailable as exc:
                failed: Future[BatchResult] = Future()
                failed.set_exception(exc)
                return failed
        assert self._threads is not None, "the store threads run between open() and close()"
        dead = Tally(letter.reason for letter in batch.letters)
        chain = self._chain(batch)
        if chain is None:
            return self._threads.submit(
                self._store.store_batch, batch.accepted, utc_timestamp(), dead
            )
        return self._threads.submit(
            self._store.store_batch, batch.accepted, utc_timestamp(), dead, chain
        )

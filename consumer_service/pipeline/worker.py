"""The Kafka worker: consume a batch, make it durable, then commit its offsets.

The batch path, one small step per guarantee, in this order:

1. `_fetch`: wait for the first record only, then take what librdkafka has already
   fetched, up to `batch_size`. An event never waits for company.
2. `_owned`: drop records of partitions revoked meanwhile; a fatal consumer error stops.
3. `_decide_all`: each record is Accepted or a DeadLetter (consumer_service.pipeline.processing);
   the poison guard stops the worker before a flood is drained into the DLQ.
4. `_start_store`: dead letters acknowledged by the broker, then the accepted events
   handed to the store thread, which runs ONE Lua script in Redis.
5. `_finish_store`: wait for the script's answer; on failure retry with backoff,
   partitions paused, until it answered.
6. `_report`: metrics, and the per-event log line when CONSUMER_LOG_EVENTS is on.
7. `_commit_batch`: the batch's offsets, asynchronously, only now.

Pipelined (CONSUMER_PIPELINE, on by default): while Redis runs batch N's script, the
main thread fetches and decides batch N+1 (steps 1-3). With CONSUMER_STORES_IN_FLIGHT=2
(where the store allows it) N+1's store is sent at once, chained after N: its script
writes nothing until N is stored. Otherwise N is finished (steps 5-7) first. Either way
batches are stored and committed in order, oldest first, and an offset is committed only
after its batch's script answered.
docs/consumer.md ("The pipeline") says who owns which state and what a crash between
any two steps does.

An offset is committed only after step 5, so a crash anywhere replays the batch, and the
"seen" marks make the replay harmless (at-least-once delivery, exactly-once effect). A
commit that is lost or fails only replays too, so it need not be waited for; partitions
that leave (revoke, close) are committed synchronously, after the store in flight
answered, so their next owner starts where this one stopped. When Redis or the DLQ does
not answer, the worker keeps the batch in hand, pauses its partitions and retries while
polling, so it stays in the group and commits nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer_service import metrics
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.dlq import DeadLetter, DeadLetterQueue, DeadLetterRejected
from consumer_service.pipeline.processing import (
    Accepted,
    PoisonWindow,
    Rejected,
    backoff_delay,
    decide,
    safe_text,
)
from consumer_service.pipeline.status import StatusFile, WorkerState, WorkerStatus
from consumer_service.storage import BatchResult, Chain, EventStore, StoreFenced, StoreRefused
from shared.errors import PipelineError, Unavailable
from shared.events import utc_timestamp
from shared.kafka import AUTHENTICATION_ERRORS, client_config, describe

log = logging.getLogger(__name__)

# A refused login ends when the group answers (an assignment), a batch is stored, or no
# refusal came for this long: longer than librdkafka's longest wait between two login
# attempts (reconnect.backoff.max.ms, 10 s), so a quiet spell means a login went through.
LOGIN_QUIET_SECONDS = 15.0

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_POISON = 3

TP = tuple[str, int]

POISON_RUNBOOK = 'see "Getting out of a poison flood" in docs/consumer.md'


class PoisonLimitExceeded(PipelineError):
    """Too many poison records in the window: stop instead of draining the topic."""


@dataclass(eq=False)
class Batch:
    """One batch from `_decide_all` to its commit: what to store, what to dead-letter,
    the offset after each partition's last record (what a commit of this batch writes),
    and how far it got. Owned by the main thread; the store thread only reads the
    `accepted` list it was handed, which is never changed afterwards (a retry hands on a
    new list)."""

    accepted: list[Accepted] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[TP, int] = field(default_factory=dict)
    # Partitions revoked or lost since the batch was consumed. Even if one comes back
    # before the batch is durable, the batch's records of it may have been dropped, so
    # they are not stored any more and must not advance its offset.
    revoked: set[TP] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    # Its place in this worker's sequence of stores (a `Chain` number), from its start.
    number: int = 0
    dlq_done: bool = False
    # The store attempt handed to the store thread (or a failed one, already answered).
    attempt: Future[BatchResult] | None = None
    # Retries of the store before it answered (0 when the first attempt did).
    retries: int = 0


def dead_letter(msg: Message, decision: Rejected) -> DeadLetter:
    """The DeadLetter of a consumed message: its original key, value and headers."""
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    key = msg.key()
    return DeadLetter(
        key=key.encode() if isinstance(key, str) else key,
        value=msg.value(),
        headers=tuple((k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in items),
        reason=decision.reason,
        message=decision.message,
        topic=str(msg.topic()),
        partition=decision.partition,
        offset=decision.offset,
    )


def consumer_config(settings: ConsumerSettings) -> dict[str, Any]:
    """The librdkafka settings of the worker's Consumer: the shared connection settings
    plus the consumer's own."""
    return client_config(
        settings.common,
        {
            "group.id": settings.consumer_group,
            "client.id": f"consumer-{socket.gethostname()}-{os.getpid()}",
            "auto.offset.reset": "earliest",
            # A replica joining or leaving moves only the partitions that change owner.
            "partition.assignment.strategy": "cooperative-sticky",
            # Offsets are committed by us, after the batch is durable.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": max(100, min(3000, settings.session_timeout_ms // 3)),
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "enable.partition.eof": False,
            "queued.max.messages.kbytes": settings.fetch_queue_kb,
        },
    )


class Worker:
    """One member of the consumer group. `run()` blocks until stopped and returns the
    process exit code; `request_stop()` may be called from a signal handler or another
    thread (it only sets a flag).

    The DLQ topic must exist before `run()` (the entry point makes sure it does), and the
    `dlq` client is closed by `run()` on its way out.
    """

    def __init__(
        self,
        settings: ConsumerSettings,
        store: EventStore,
        dlq: DeadLetterQueue,
        status_file: StatusFile | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._dlq = dlq
        self._status_file = status_file
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._consumer: Consumer | None = None
        self._assigned: set[TP] = set()
        self._paused = False
        # Durable but not known to be committed: next offset per partition.
        self._uncommitted: dict[TP, int] = {}
        # Batches consumed and not yet committed or dropped (at most `_depth` + 1: those
        # whose store is in flight or being retried, one decided and waiting). A
        # partition that leaves is added to each one's `revoked`.
        self._in_hand: list[Batch] = []
        # The batches whose store was started and not yet finished (_finish_store),
        # oldest first; they finish in this order.
        self._flight: list[Batch] = []
        self._depth = (
            min(settings.stores_in_flight, store.max_in_flight) if settings.pipeline else 1
        )
        # This run's name and batch count in the store's chain (used when _depth > 1).
        self._writer = uuid.uuid4().hex
        self._numbered = 0
        # Run the store scripts, `_depth` at a time: the only threads besides the main
        # one that touch a batch, and they touch only the store.
        self._store_thread: ThreadPoolExecutor | None = None
        self._poison = PoisonWindow(settings.poison_window, settings.poison_max_share)
        self._state: WorkerState = "starting"
        self._detail = ""
        # The detail of the back-off a refused Kafka login caused, until the group answers.
        self._login_refused: str | None = None
        self._last_refusal = 0.0
        self._last_lag = 0.0

    # -- control -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to finish its batch, commit, leave the group and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def assigned(self) -> frozenset[TP]:
        return frozenset(self._assigned)

    def set_state(self, state: WorkerState, detail: str = "") -> None:
        """Publish the worker's state to the status file (the read API's /ready)."""
        self._state = state
        self._detail = detail
        self._heartbeat(force=True)

    def run(self) -> int:
        """Consume until stopped. Returns EXIT_OK after a requested stop, EXIT_POISON
        when the poison guard tripped, EXIT_FATAL on a fatal Kafka error, a record the
        DLQ refused for good, or any unexpected exception (logged with its traceback)."""
        s = self._settings
        if self._stop.is_set():
            self.set_state("stopped", "stopped before it started")
            return EXIT_OK
        config = {
            **consumer_config(s),
            "error_cb": self._on_error,
            "on_commit": self._on_commit,
        }
        self._consumer = Consumer(config)
        self._store_thread = ThreadPoolExecutor(max_workers=self._depth, thread_name_prefix="store")
        self._consumer.subscribe(
            [s.common.kafka_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("worker started", extra={"topic": s.common.kafka_topic, "group": s.consumer_group})
        # Anything that leaves the loop other than a requested stop is a failure, including
        # what no except clause below names: the status must say "failed", never "stopped".
        code = EXIT_FATAL
        try:
            # "running" once the group has answered with this member's first assignment
            # (see _on_assign): ready means events are being consumed, not just polled for.
            self.set_state("joining")
            while not self._stop.is_set() and self._fatal is None:
                self._heartbeat()
                # A store in flight means a result to collect: never wait idle for records.
                messages = self._fetch(wait=not self._flight)
                batch = self._prepare(messages)
                if self._flight and (batch is None or len(self._flight) == self._depth):
                    # A result is due: nothing new to send, or no room for it.
                    done = self._finish_store()
                    if done is None:
                        break  # stopping while Redis/DLQ were down: nothing committed
                    try:
                        self._resend_fenced()
                        if batch is not None and s.pipeline:
                            # Redis gets the next script before the answered batch's
                            # bookkeeping: it waits for us as little as possible.
                            self._start_store(batch)
                            batch = None
                    finally:
                        # Stored, so reported and committed whatever the next start did.
                        self._complete(*done)
                elif not messages and self._uncommitted:
                    # An async commit refused meanwhile (ILLEGAL_GENERATION during a
                    # rebalance, say) is otherwise retried only with the next batch: on a
                    # quiet topic the group's offsets, and so its lag, would stay behind.
                    self._commit(asynchronous=True)
                if batch is not None:
                    self._start_store(batch)
                    if not s.pipeline:
                        done = self._finish_store()
                        if done is None:
                            break
                        self._complete(*done)
                self._update_lag()
                if (
                    self._login_refused is not None
                    and time.monotonic() - self._last_refusal > LOGIN_QUIET_SECONDS
                ):
                    self._login_accepted()
            if self._fatal is not None:
                log.error("fatal Kafka error, stopping", extra={"error": self._fatal})
                self._detail = self._fatal
            else:
                code = EXIT_OK
        except PoisonLimitExceeded as exc:
            log.error(
                "poison limit exceeded, stopping without committing this batch",
                extra={"error": str(exc), "topic": s.common.kafka_topic},
            )
            self._detail = str(exc)
            code = EXIT_POISON
        except KafkaException as exc:
            log.error("Kafka error, stopping", extra={"error": str(exc)})
            self._detail = str(exc)
        except DeadLetterRejected as exc:
            log.error(
                "the DLQ refused a poison record for good; stopping without committing this "
                "batch: fix the DLQ topic (size limit, permissions) and restart",
                extra={"error": str(exc), "topic": s.dlq_topic},
            )
            self._detail = str(exc)
        except Exception as exc:
            # A bug, or a dependency failing in a way nobody foresaw: stop (the batch stays
            # uncommitted) and let the orchestrator restart us, with the traceback logged.
            log.exception("unexpected error, stopping", extra={"error": repr(exc)})
            self._detail = f"unexpected error: {exc!r}"
        finally:
            self._close(code)
        return code

    # -- the batch path ------------------------------------------------------------

    def _prepare(self, messages: Sequence[Message]) -> Batch | None:
        """Steps 2-3: the records still owned, each decided. None when none is left."""
        started = time.monotonic()
        owned = self._owned(messages)
        if not owned:
            return None
        batch = self._decide_all(owned)
        batch.started = started
        self._in_hand.append(batch)
        return batch

    def _fetch(self, wait: bool = True) -> list[Message]:
        """Block up to the poll timeout (not at all unless `wait`) for the first record,
        then take, without waiting, what is already fetched (up to batch_size in all).
        Rebalance callbacks run in here."""
        consumer = self._require_consumer()
        s = self._settings
        first: list[Message] = consumer.consume(1, s.poll_timeout_seconds if wait else 0)
        if not first or s.batch_size == 1:
            return first
        return first + consumer.consume(s.batch_size - 1, 0)

    def _owned(self, messages: Sequence[Message]) -> list[Message]:
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

    def _decide_all(self, messages: Sequence[Message]) -> Batch:
        """Each record Accepted or dead-lettered, in order. Raises PoisonLimitExceeded
        when the guard trips: then nothing of this batch is sent, stored or committed."""
        out = Batch()
        accept = out.accepted.append
        guard = self._poison
        max_bytes = self._settings.max_message_bytes
        topic = self._topic
        for msg in messages:
            # Never None on a message without an error (_owned kept only those).
            partition = msg.partition() or 0
            offset = msg.offset() or 0
            try:
                decision = decide(msg.value(), partition, offset, max_bytes)
            except Exception as exc:
                decision = self._undecidable(msg, exc)
            poison = type(decision) is not Accepted
            if guard.record(poison):
                s = self._settings
                raise PoisonLimitExceeded(
                    f"{guard.poison_count} of the last {s.poison_window} records were "
                    f"poison (limit {s.poison_max_share:.0%}); {POISON_RUNBOOK}"
                )
            if poison:
                assert isinstance(decision, Rejected)
                out.letters.append(dead_letter(msg, decision))
            else:
                assert isinstance(decision, Accepted)
                accept(decision)
            out.next_offsets[(topic, partition)] = offset + 1
        return out

    def _undecidable(self, msg: Message, exc: Exception) -> Rejected:
        """The safety net of decide(): a record whose decision raises anything is
        dead-lettered as `processing_error`. Otherwise one such record would crash every
        replica that takes its partition, over and over, and stop the partition for good."""
        topic, partition, offset = msg.topic(), msg.partition() or 0, msg.offset() or 0
        log.error(
            "unexpected error deciding a record; dead-lettering it",
            exc_info=exc,
            extra={"topic": topic, "partition": partition, "offset": offset},
        )
        return Rejected(
            "processing_error",
            safe_text(f"Unexpected error while processing the record: {exc!r}"),
            partition,
            offset,
        )

    def _start_store(self, batch: Batch) -> None:
        """Step 4: the batch's first attempt, with fewer than `_depth` stores in flight.
        With one in flight already, the store is chained after it (`Chain`): the script
        writes nothing before the earlier batch is stored, so batches are stored in
        order (the seen marks' first-wins rule and each user's order depend on it)."""
        assert len(self._flight) < self._depth, "no room for another store"
        if batch.revoked:
            # Partitions left while the store before this one was retried.
            self._drop_revoked(batch)
        self._numbered += 1
        batch.number = self._numbered
        self._flight.append(batch)
        batch.attempt = self._attempt(batch)

    def _resend_fenced(self) -> None:
        """The oldest batch in flight, if it already came back FENCED (it reached Redis
        before the batch before it was stored, which now is): send it again, and wait
        until Redis answered. Chained after the attempt that is over, the next batch
        would be fenced in turn, and the one after it, as long as batches keep coming;
        sent while the new attempt is on its way, it could overtake it on its own
        connection. A failure of the new attempt is left to `_finish_store`."""
        head = self._flight[0] if self._flight else None
        if head is None or head.attempt is None or not head.attempt.done():
            return
        if isinstance(head.attempt.exception(), StoreFenced):
            self._drop_revoked(head)
            head.attempt = self._attempt(head)
            head.attempt.exception()  # waits

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
        of either comes back through the returned future."""
        if not batch.dlq_done:
            try:
                if batch.letters:
                    self._dlq.send(batch.letters)
                batch.dlq_done = True
            except Unavailable as exc:
                failed: Future[BatchResult] = Future()
                failed.set_exception(exc)
                return failed
        assert self._store_thread is not None, "the store thread exists while run() runs"
        dead = Tally(letter.reason for letter in batch.letters)
        chain = self._chain(batch)
        if chain is None:
            return self._store_thread.submit(
                self._store.store_batch, batch.accepted, utc_timestamp(), dead
            )
        return self._store_thread.submit(
            self._store.store_batch, batch.accepted, utc_timestamp(), dead, chain
        )

    def _finish_store(self) -> tuple[Batch, BatchResult] | None:
        """Step 5 for the oldest batch in flight: wait for its store, retrying with
        backoff until it answered. Then it leaves the flight, and the caller owes it its
        steps 6-7 (`_complete`). None when asked to stop before that (the batch is
        dropped uncommitted: its next owner replays it).

        Unexpected exceptions of the store thread are raised here. Records of partitions
        revoked meanwhile are dropped from a retry: their new owner handles them."""
        batch = self._flight[0]
        assert batch.attempt is not None
        s = self._settings
        while True:
            try:
                result = batch.attempt.result()
                break
            except StoreFenced:
                # Sent while the batch before it was in flight, and run by Redis before
                # that one was stored (it failed, or came second on its connection). That
                # one is stored now, or this one would not be the oldest: go again.
                self._drop_revoked(batch)
                batch.attempt = self._attempt(batch)
            except Unavailable as exc:
                metrics.BATCH_RETRIES.inc()
                delay = backoff_delay(
                    batch.retries, s.backoff_initial_seconds, s.backoff_max_seconds
                )
                # A refusal (a wrong-type key, named in the error) lasts until fixed by hand.
                level = logging.ERROR if isinstance(exc, StoreRefused) else logging.WARNING
                log.log(
                    level,
                    "batch not durable, retrying",
                    extra={"error": str(exc), "attempt": batch.retries + 1, "retry_in_s": delay},
                )
                self.set_state("backing_off", str(exc))
                if not self._wait_paused(delay):
                    self._drop(batch)
                    return None
                batch.retries += 1
                self._drop_revoked(batch)
                batch.attempt = self._attempt(batch)
            except BaseException:
                self._drop(batch)
                raise
        if self._paused:
            self._resume()
        if self._state != "running":
            self.set_state("running")
        self._flight.remove(batch)
        return batch, result

    def _complete(self, batch: Batch, result: BatchResult) -> None:
        """Steps 6-7 for a batch whose store answered."""
        if batch.retries and result.redelivered:
            # An attempt that failed after Redis ran the script (the reply was lost) stored
            # these: they are this worker's processing, not an earlier one's.
            result = BatchResult(result.stored + result.redelivered, result.duplicates, ())
        self._drop(batch)
        self._report(batch, result)
        self._commit_batch(batch)
        metrics.BATCH_SECONDS.observe(time.monotonic() - batch.started)

    def _drop(self, batch: Batch) -> None:
        """The batch leaves the worker's hands (committed, or left for a replay)."""
        if batch in self._flight:
            self._flight.remove(batch)
        if batch in self._in_hand:
            self._in_hand.remove(batch)

    def _drop_revoked(self, batch: Batch) -> None:
        """Before a retry: forget the records of partitions that left meanwhile."""
        keep = self._assigned - batch.revoked
        topic = self._topic
        batch.accepted = [a for a in batch.accepted if (topic, a.partition) in keep]
        batch.letters = [x for x in batch.letters if (x.topic, x.partition) in keep]

    def _await_in_flight(self) -> list[tuple[Batch, BatchResult]]:
        """Wait until every store in flight answered (a rebalance or a stop must not let
        one write after the partitions left). The batches that succeeded, up to the first
        that did not, have their offsets join the durable ones, so a synchronous commit
        that follows includes them; they are returned with their results, oldest first.
        A failed store is left for `_finish_store` to retry, and so is every batch after
        it: their offsets are past its records. Never raises."""
        for batch in self._flight:
            if batch.attempt is not None:
                batch.attempt.exception()  # waits
        answered: list[tuple[Batch, BatchResult]] = []
        for batch in self._flight:
            if batch.attempt is None or batch.attempt.exception() is not None:
                break
            self._mark_durable(batch)
            answered.append((batch, batch.attempt.result()))
        return answered

    def _report(self, batch: Batch, result: BatchResult) -> None:
        """Counters, the dead letters' WARNING lines, and (CONSUMER_LOG_EVENTS) one INFO
        line per event, as the replaced service logged them."""
        if self._settings.log_events and log.isEnabledFor(logging.INFO):
            for ev in result.stored:
                log.info("event processed", extra=_event_fields(ev))
            for ev in result.redelivered:
                # Stored by an earlier attempt whose commit (or reply) was lost: still this
                # event's processing, logged again rather than not at all.
                log.info("event processed", extra={**_event_fields(ev), "redelivery": True})
            for ev in result.duplicates:
                log.info("duplicate skipped", extra=_event_fields(ev))
        for letter in batch.letters:
            log.warning(
                "record dead-lettered",
                extra={
                    "topic": letter.topic,
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "reason": letter.reason,
                    "error": safe_text(letter.message[:300]),
                },
            )
            metrics.DEAD_LETTERED.labels(letter.reason).inc()
        if result.stored:
            metrics.EVENTS_PROCESSED.inc(len(result.stored))
        if result.duplicates:
            metrics.DUPLICATES_SKIPPED.inc(len(result.duplicates))

    def _commit_batch(self, batch: Batch) -> None:
        """Commit a durable batch's offsets without waiting for the broker. Safe: a
        commit lost on the way only replays the batch, which the seen marks make
        harmless; partitions that leave are committed synchronously (_on_revoke, _close)."""
        self._mark_durable(batch)
        self._commit(asynchronous=True)

    def _mark_durable(self, batch: Batch) -> None:
        """The batch answered: its offsets of partitions it still owns are due a commit."""
        uncommitted = self._uncommitted
        for tp, offset in batch.next_offsets.items():
            owned = tp in self._assigned and tp not in batch.revoked
            if owned and offset > uncommitted.get(tp, 0):
                uncommitted[tp] = offset

    # -- staying in the group while Redis or the DLQ is away -----------------------

    def _wait_paused(self, delay: float) -> bool:
        """Sleep `delay` seconds while staying a live group member: partitions paused,
        poll() called so heartbeats, rebalances and max.poll.interval.ms are served.
        False when a stop was requested."""
        consumer = self._require_consumer()
        if not self._paused:
            consumer.pause([TopicPartition(t, p) for t, p in self._assigned])
            self._paused = True
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._heartbeat()
            msg = consumer.poll(min(remaining, 0.5))
            if msg is not None and msg.error() is None:
                # From a partition assigned during the pause: put it back, hold it.
                topic, partition = str(msg.topic()), msg.partition() or 0
                consumer.seek(TopicPartition(topic, partition, msg.offset() or 0))
                consumer.pause([TopicPartition(topic, partition)])
        return False

    def _resume(self) -> None:
        consumer = self._require_consumer()
        consumer.resume([TopicPartition(t, p) for t, p in self._assigned])
        self._paused = False

    # -- commits -------------------------------------------------------------------

    def _commit(self, only: set[TP] | None = None, *, asynchronous: bool = False) -> None:
        """Commit the durable offsets (all, or those of `only`). Synchronous unless asked:
        then `_on_commit` settles them. A failure is logged and retried with the next
        commit: replaying is harmless."""
        pending = {tp: o for tp, o in self._uncommitted.items() if only is None or tp in only}
        if not pending:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
        consumer = self._require_consumer()
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._settle(consumer.commit(offsets=offsets, asynchronous=False) or [])
        except KafkaException as exc:
            log.warning(
                "offset commit failed; the batch may be replayed", extra={"error": str(exc)}
            )

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
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

    # -- rebalance callbacks (run inside consume()/poll()/close()) -----------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        metrics.ASSIGNED_PARTITIONS.set(len(self._assigned))
        self._login_accepted()
        if self._state == "joining":
            self.set_state("running")
        log.info(
            "partitions assigned",
            extra={"partitions": _names(partitions), "assigned": len(self._assigned)},
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        # Everything durable for these partitions, the store in flight included once it
        # answered, is committed, and confirmed, before they go: the next owner starts
        # from there, and no store of ours writes their records after that.
        self._await_in_flight()
        self._commit(only=revoked)
        self._forget(revoked)
        log.info(
            "partitions revoked",
            extra={"partitions": _names(partitions), "assigned": len(self._assigned)},
        )

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Someone else may own them already: committing now could go backwards. The store
        # in flight is waited for, so none of ours writes their records after this.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._await_in_flight()
        self._forget(lost)
        log.warning("partitions lost", extra={"partitions": _names(partitions)})

    def _forget(self, tps: set[TP]) -> None:
        self._assigned -= tps
        for batch in self._in_hand:
            batch.revoked |= tps
        for tp in tps:
            self._uncommitted.pop(tp, None)
            metrics.CONSUMER_LAG.labels(tp[0], str(tp[1])).set(0)
        metrics.ASSIGNED_PARTITIONS.set(len(self._assigned))

    def _on_error(self, err: KafkaError) -> None:
        # librdkafka's error_cb: served inside consume()/poll()/close(), so on the main
        # thread, like the state it changes.
        if err.fatal():
            self._fatal = str(err)
        elif err.name() in AUTHENTICATION_ERRORS and self._state in (
            "joining",
            "running",
            "backing_off",
        ):
            self._last_refusal = time.monotonic()
            # Not fatal to librdkafka, which retries the login every few hundred ms, but
            # nothing is consumed until the credentials are fixed: /ready must say so,
            # and the log once per change, not once per retry.
            # Each retry's message differs (it says how long the attempt took): the
            # first one of a refusal is the one published and logged.
            if self._state != "backing_off" or self._detail != self._login_refused:
                detail = (
                    f"Kafka at {describe(self._settings.common)} refused the login: {err.str()}"
                )
                log.error("Kafka refused the worker's login", extra={"error": detail})
                self._login_refused = detail
                self.set_state("backing_off", detail)
        else:
            # Broker connection trouble: librdkafka reconnects by itself.
            log.warning("Kafka client error", extra={"error": str(err)})

    def _login_accepted(self) -> None:
        """The login succeeded again: end the back-off a refused login caused. Called on an
        assignment (a refusal outlasting the session timeout always ends this way, since
        the member was expelled and has to rejoin) and after LOGIN_QUIET_SECONDS without a
        refusal (a short one, on a quiet topic); a stored batch ends it too
        (`_finish_store`)."""
        refused, self._login_refused = self._login_refused, None
        if refused is not None and self._state == "backing_off" and self._detail == refused:
            log.info("Kafka accepts the worker's login again")
            self.set_state("running" if self._assigned else "joining")

    # -- housekeeping ----------------------------------------------------------------

    @property
    def _topic(self) -> str:
        return self._settings.common.kafka_topic

    def _require_consumer(self) -> Consumer:
        assert self._consumer is not None, "the consumer exists while run() runs"
        return self._consumer

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 1.0 or not self._assigned:
            return
        self._last_lag = now
        consumer = self._require_consumer()
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in self._assigned])
            for tp in positions:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                        max(0, high - tp.offset)
                    )
        except KafkaException as exc:
            log.debug("lag not available", extra={"error": str(exc)})

    def _heartbeat(self, force: bool = False) -> None:
        if self._status_file is None:
            return
        try:
            self._status_file.write(
                WorkerStatus(self._state, time.time(), len(self._assigned), self._detail),
                force=force,
            )
        except OSError as exc:
            log.warning("cannot write the worker status file", extra={"error": str(exc)})

    def _close(self, code: int) -> None:
        self.set_state("stopping", self._detail)
        if self._consumer is not None:
            try:
                # What is durable, the store in flight included once it answered, is
                # committed, and confirmed, before leaving; then close() revokes every
                # partition (our on_revoke commits anything left) and leaves the group at
                # once, so the others take over without waiting for the session timeout.
                # A store that failed is not retried now: its batch is replayed.
                for batch, result in self._await_in_flight():
                    self._complete(batch, result)
                self._commit()
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
        if self._store_thread is not None:
            self._store_thread.shutdown(wait=True)
        try:
            self._dlq.close()
        except KafkaException as exc:
            log.warning("DLQ producer close failed", extra={"error": str(exc)})
        self.set_state("stopped" if code == EXIT_OK else "failed", self._detail)
        log.info("worker stopped", extra={"exit_code": code})


def _event_fields(ev: Accepted) -> dict[str, Any]:
    return {
        "event_id": ev.event_id,
        "user_id": ev.record["userId"],
        "event_type": ev.record["eventType"],
        "partition": ev.partition,
        "offset": ev.offset,
    }


def _names(partitions: Sequence[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]

"""The Kafka worker: consume a batch, make it durable, then commit its offsets.

The batch path, one small step per guarantee, in this order:

1. `_fetch`: wait for the first record only, then take what librdkafka has already
   fetched, up to `batch_size`. An event never waits for company.
2. `Offsets.owned`: drop records of partitions revoked meanwhile; a fatal consumer error stops.
3. `decide_batch` (pipeline.batch): each record is Accepted or a DeadLetter
   (pipeline.processing); the poison guard stops the worker before a flood is drained
   into the DLQ. With payload encryption on, `_open_payloads` (pipeline.shredding)
   then drops the records of erased users and dead-letters payloads that do not open.
4. `Flight.start` (pipeline.flight): dead letters acknowledged by the broker, then the
   accepted events handed to a store thread, which runs ONE Lua script in Redis.
5. `_finish_store`: wait for the script's answer; on failure retry with backoff,
   partitions paused (pipeline.backoff), until it answered.
6. `_report`: metrics, and the per-event log line when CONSUMER_LOG_EVENTS is on.
7. `Offsets.commit_batch` (pipeline.offsets): the batch's offsets, asynchronously,
   only now.

Pipelined (CONSUMER_PIPELINE, on by default): while Redis runs batch N's script, the
main thread fetches and decides batch N+1 (steps 1-3). With CONSUMER_STORES_IN_FLIGHT=2
(where the store allows it) N+1's store is sent at once, chained after N: its script
writes nothing until N is stored. Otherwise N is finished (steps 5-7) first. Either way
batches are stored and committed in order, oldest first, and an offset is committed only
after its batch's script answered.

Who owns what (one writer each; all on the main thread, the store threads touch only
the store):

* `Worker`: the Consumer, the stop flag, a fatal Kafka error, the loop.
* `Offsets`: the assignment and the durable offsets not yet committed; every commit.
* `Flight`: the batches in hand, the stores in flight and their order in the chain,
  the store threads; the only writer of `Batch.revoked`.
* `Backoff`: whether the partitions are paused. `LoginWatch`: a refused login in
  progress. `Health`: the published state and the status file; `LagGauge`: the lag.
* `Rebalance`: no state; its callbacks delegate to the owners above.

A crash between any two steps: an offset is committed only after step 5, so a crash
anywhere replays the batch, and the "seen" marks make the replay harmless (at-least-once
delivery, exactly-once effect). A commit that is lost or fails only replays too, so it
need not be waited for; partitions that leave (revoke, close) are committed
synchronously, after the stores in flight answered, so their next owner starts where
this one stopped. When Redis or the DLQ does not answer, the worker keeps the batch in
hand, pauses its partitions and retries while polling, so it stays in the group and
commits nothing. docs/consumer.md ("The pipeline") tells the same, step by step.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from consumer_service import metrics
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.backoff import Backoff
from consumer_service.pipeline.batch import TP, Batch, PoisonLimitExceeded, decide_batch
from consumer_service.pipeline.dlq import FACTS_MAX_BYTES, DeadLetterQueue, DeadLetterRejected
from consumer_service.pipeline.flight import Flight
from consumer_service.pipeline.health import Health, LagGauge
from consumer_service.pipeline.login import LoginWatch
from consumer_service.pipeline.offsets import Offsets
from consumer_service.pipeline.processing import Accepted, PoisonWindow, safe_text
from consumer_service.pipeline.rebalance import Rebalance
from consumer_service.pipeline.shredding import PayloadScreen, data_keys, key_client
from consumer_service.pipeline.status import StatusFile, WorkerState
from consumer_service.storage import BatchResult, EventStore, StoreFenced
from shared.errors import Unavailable
from shared.events import event_key
from shared.kafka import client_config, describe

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_POISON = 3


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
        self._dlq = dlq
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._consumer: Consumer | None = None
        self._poison = PoisonWindow(settings.poison_window, settings.poison_max_share)
        depth = min(settings.stores_in_flight, store.max_in_flight) if settings.pipeline else 1
        self._offsets = Offsets()
        assigned = self._offsets.assigned
        self._health = Health(status_file, assigned)
        self._flight = Flight(store, dlq, depth, self._offsets, settings.common.kafka_topic)
        self._backoff = Backoff(settings, self._offsets, self._health, self._stop)
        self._login = LoginWatch(self._health, assigned, describe(settings.common))
        self._rebalance = Rebalance(self._offsets, self._flight, self._login, self._health)
        self._lag = LagGauge()
        self._screen = (
            PayloadScreen(data_keys(settings, key_client(settings)))
            if settings.encryption.enabled
            else None
        )

    # -- control -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to finish its batch, commit, leave the group and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def assigned(self) -> frozenset[TP]:
        return frozenset(self._offsets.assigned)

    def set_state(self, state: WorkerState, detail: str = "") -> None:
        """Publish the worker's state to the status file (the read API's /ready)."""
        self._health.set(state, detail)

    def run(self) -> int:
        """Consume until stopped. Returns EXIT_OK after a requested stop, EXIT_POISON
        when the poison guard tripped, EXIT_FATAL on a fatal Kafka error, a record the
        DLQ refused for good, or any unexpected exception (logged with its traceback)."""
        if self._stop.is_set():
            self.set_state("stopped", "stopped before it started")
            return EXIT_OK
        self._open()
        # Anything that leaves the loop other than a requested stop is a failure, including
        # what no except clause names: the status must say "failed", never "stopped".
        code, detail = EXIT_FATAL, None
        try:
            # "running" once the group has answered with this member's first assignment
            # (Rebalance.on_assign): ready means events are being consumed, not just polled.
            self.set_state("joining")
            while not self._stop.is_set() and self._fatal is None:
                if not self._turn():
                    break  # stopping while Redis/DLQ were down: nothing committed
            code, detail = self._loop_ended()
        except Exception as exc:
            code, detail = _failure(exc, self._settings)
        finally:
            self._close(code, detail)
        return code

    # -- the loop ------------------------------------------------------------------

    def _turn(self) -> bool:
        """One turn: fetch and decide a batch, finish the oldest store when its result is
        due, start the next. False when a stop came while a store was being retried."""
        self._health.heartbeat()
        flight = self._flight
        # A store in flight means a result to collect: never wait idle for records.
        messages = self._fetch(wait=not flight.busy)
        batch = self._prepare(messages)
        if flight.busy and (batch is None or flight.full):
            # A result is due: nothing new to send, or no room for it.
            done = self._finish_store()
            if done is None:
                return False
            batch = self._next_after(done, batch)
        elif not messages and self._offsets.pending:
            # An async commit refused meanwhile (ILLEGAL_GENERATION during a rebalance,
            # say) is otherwise retried only with the next batch: on a quiet topic the
            # group's offsets, and so its lag, would stay behind.
            self._offsets.commit(asynchronous=True)
        if batch is not None and not self._store(batch):
            return False
        self._lag.update(self._require_consumer(), self._offsets.assigned)
        self._login.tick()
        return True

    def _next_after(self, done: tuple[Batch, BatchResult], batch: Batch | None) -> Batch | None:
        """The oldest store answered (`done`): a fenced batch behind it is resent first,
        then, pipelined, `batch` is sent before `done`'s bookkeeping, so Redis waits for
        us as little as possible. Returns `batch` when it is still to be started."""
        try:
            self._flight.resend_fenced()
            if batch is not None and self._settings.pipeline:
                self._flight.start(batch)
                batch = None
        finally:
            # Stored, so reported and committed whatever the next start did.
            self._complete(*done)
        return batch

    def _store(self, batch: Batch) -> bool:
        """Start the batch's store; unpipelined, also finish it. False when a stop came
        while it was being retried."""
        self._flight.start(batch)
        if self._settings.pipeline:
            return True
        done = self._finish_store()
        if done is None:
            return False
        self._complete(*done)
        return True

    # -- the batch path ------------------------------------------------------------

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

    def _prepare(self, messages: Sequence[Message]) -> Batch | None:
        """Steps 2-3: the records still owned, each decided, the batch in hand. None when
        none is left."""
        started = time.monotonic()
        owned = self._offsets.owned(messages)
        if not owned:
            return None
        batch = decide_batch(owned, self._poison, self._settings)
        batch.started = started
        # Held first: a rebalance while the payload step waits for Redis marks it revoked.
        self._flight.hold(batch)
        if self._screen is not None and not self._open_payloads(batch):
            self._flight.drop(batch)
            return None
        return batch

    def _open_payloads(self, batch: Batch) -> bool:
        """Step 3b, with payload encryption on (pipeline.shredding): records of erased
        users dropped, payloads that do not open dead-lettered. Retried with backoff while
        Redis does not answer; False when a stop came meanwhile (nothing of the batch is
        committed: its next owner replays it)."""
        assert self._screen is not None
        retries = 0
        while True:
            try:
                self._screen.screen(batch, self._settings.common.kafka_topic)
            except Unavailable as exc:
                if not self._backoff.wait(retries, exc):
                    return False
                retries += 1
                continue
            if retries:
                self._backoff.resume()
            return True

    def _finish_store(self) -> tuple[Batch, BatchResult] | None:
        """Step 5 for the oldest batch in flight: wait for its store, retrying with
        backoff until it answered. Then it leaves the flight, and the caller owes it its
        steps 6-7 (`_complete`). None when asked to stop before that (the batch is
        dropped uncommitted: its next owner replays it).

        Unexpected exceptions of the store thread are raised here. Records of partitions
        revoked meanwhile are dropped from a retry: their new owner handles them."""
        flight = self._flight
        batch = flight.oldest
        assert batch.attempt is not None
        while True:
            try:
                result = batch.attempt.result()
                break
            except StoreFenced:
                # Sent while the batch before it was in flight, and run by Redis before
                # that one was stored (it failed, or came second on its connection). That
                # one is stored now, or this one would not be the oldest: go again.
                flight.retry(batch)
            except Unavailable as exc:
                if not self._backoff.wait(batch.retries, exc):
                    flight.drop(batch)
                    return None
                batch.retries += 1
                flight.retry(batch)
            except BaseException:
                flight.drop(batch)
                raise
        self._backoff.resume()
        if self._health.state != "running":
            self.set_state("running")
        flight.landed(batch)
        return batch, result

    def _complete(self, batch: Batch, result: BatchResult) -> None:
        """Steps 6-7 for a batch whose store answered."""
        if batch.retries and result.redelivered:
            # An attempt that failed after Redis ran the script (the reply was lost) stored
            # these: they are this worker's processing, not an earlier one's.
            result = BatchResult(
                result.stored + result.redelivered, result.duplicates, (), result.erased
            )
        self._flight.drop(batch)
        _report(batch, result, self._settings.log_events)
        self._offsets.commit_batch(batch)
        metrics.BATCH_SECONDS.observe(time.monotonic() - batch.started)

    # -- start and end ---------------------------------------------------------------

    def _open(self) -> None:
        """Create the consumer, start the store threads, subscribe."""
        s = self._settings
        config = {
            **consumer_config(s),
            "error_cb": self._on_error,
            "on_commit": self._offsets.on_commit,
        }
        self._consumer = Consumer(config)
        self._offsets.attach(self._consumer)
        self._backoff.attach(self._consumer)
        self._flight.open()
        self._consumer.subscribe(
            [s.common.kafka_topic],
            on_assign=self._rebalance.on_assign,
            on_revoke=self._rebalance.on_revoke,
            on_lost=self._rebalance.on_lost,
        )
        log.info("worker started", extra={"topic": s.common.kafka_topic, "group": s.consumer_group})

    def _on_error(self, err: KafkaError) -> None:
        # librdkafka's error_cb: served inside consume()/poll()/close(), so on the main
        # thread, like the state it changes.
        if err.fatal():
            self._fatal = str(err)
        elif not self._login.refused(err):
            # Broker connection trouble: librdkafka reconnects by itself.
            log.warning("Kafka client error", extra={"error": str(err)})

    def _loop_ended(self) -> tuple[int, str | None]:
        """The loop ended without an exception: a requested stop, or a fatal error. The
        exit code, and the detail to publish with it (None: keep the current one)."""
        if self._fatal is None:
            return EXIT_OK, None
        log.error("fatal Kafka error, stopping", extra={"error": self._fatal})
        return EXIT_FATAL, self._fatal

    def _close(self, code: int, detail: str | None) -> None:
        self.set_state("stopping", self._health.detail if detail is None else detail)
        if self._consumer is not None:
            try:
                # What is durable, the stores in flight included once they answered, is
                # committed, and confirmed, before leaving; then close() revokes every
                # partition (on_revoke commits anything left) and leaves the group at
                # once, so the others take over without waiting for the session timeout.
                # A store that failed is not retried now: its batch is replayed.
                for batch, result in self._flight.answered():
                    self._complete(batch, result)
                self._offsets.commit()
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
        self._flight.close()
        try:
            self._dlq.close()
        except KafkaException as exc:
            log.warning("DLQ producer close failed", extra={"error": str(exc)})
        self.set_state("stopped" if code == EXIT_OK else "failed", self._health.detail)
        log.info("worker stopped", extra={"exit_code": code})

    def _require_consumer(self) -> Consumer:
        assert self._consumer is not None, "the consumer exists while run() runs"
        return self._consumer


def _failure(exc: Exception, s: ConsumerSettings) -> tuple[int, str]:
    """The exit code for an exception that ended the loop, logged, and the detail of the
    final state. The batch in hand stays uncommitted."""
    if isinstance(exc, PoisonLimitExceeded):
        log.error(
            "poison limit exceeded, stopping without committing this batch",
            extra={"error": str(exc), "topic": s.common.kafka_topic},
        )
        return EXIT_POISON, str(exc)
    if isinstance(exc, KafkaException):
        log.error("Kafka error, stopping", extra={"error": str(exc)})
        return EXIT_FATAL, str(exc)
    if isinstance(exc, DeadLetterRejected):
        log.error(
            "the DLQ refused a poison record for good; stopping without committing this "
            f"batch: fix the DLQ topic (permissions, or a max.message.bytes below "
            f"{FACTS_MAX_BYTES}, which no dead letter fits) and restart",
            extra={"error": str(exc), "topic": s.dlq_topic},
        )
        return EXIT_FATAL, str(exc)
    # A bug, or a dependency failing in a way nobody foresaw: stop and let the
    # orchestrator restart us, with the traceback logged.
    log.exception("unexpected error, stopping", extra={"error": repr(exc)})
    return EXIT_FATAL, f"unexpected error: {exc!r}"


def _report(batch: Batch, result: BatchResult, log_events: bool) -> None:
    """Step 6: counters, the dead letters' WARNING lines, and (CONSUMER_LOG_EVENTS) one
    INFO line per event, as the replaced service logged them."""
    if log_events and log.isEnabledFor(logging.INFO):
        for ev in result.stored:
            log.info("event processed", extra=_event_fields(ev))
        for ev in result.redelivered:
            # Stored by an earlier attempt whose commit (or reply) was lost: still this
            # event's processing, logged again rather than not at all.
            log.info("event processed", extra={**_event_fields(ev), "redelivery": True})
        for ev in result.duplicates:
            log.info("duplicate skipped", extra=_event_fields(ev))
        for ev in result.erased:
            log.info("erased event dropped", extra=_event_fields(ev))
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
    if result.erased:
        metrics.ERASED_DROPPED.inc(len(result.erased))


def _event_fields(ev: Accepted) -> dict[str, Any]:
    return {
        "event_id": ev.event_id,
        "user_id": event_key(ev.record),
        "event_type": ev.record["eventType"],
        "partition": ev.partition,
        "offset": ev.offset,
    }

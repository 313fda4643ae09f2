"""The Kafka worker: consume a batch, make it durable, then commit its offsets.

One loop, in this order, for every batch:

1. `consume(batch_size, poll_timeout)`: records of the partitions this replica owns, in
   offset order per partition.
2. Decide each record (consumer_service.processing): store, or dead-letter.
3. Dead-letter the poison records and wait for the broker's acknowledgement.
4. Store the good ones in Redis in ONE Lua script (dedup + store + indexes).
5. Commit the batch's offsets synchronously.

An offset is committed only after step 3 and 4 answered, so a crash anywhere replays the
batch, and the "seen" marks make the replay harmless (at-least-once delivery, exactly-once
effect). When Redis or the DLQ does not answer, the worker keeps the batch in hand, pauses
its partitions and retries with exponential backoff while polling, so it stays in the
group and commits nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer_service import metrics
from consumer_service.config import ConsumerSettings
from consumer_service.dlq import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterRejected,
    KafkaDeadLetterQueue,
)
from consumer_service.processing import (
    Accepted,
    Decision,
    PoisonWindow,
    Rejected,
    backoff_delay,
    decide,
    safe_text,
)
from consumer_service.status import StatusFile, WorkerState, WorkerStatus
from consumer_service.store import BatchResult, EventStore, StoreRefused
from consumer_service.topics import ensure_dlq_topic
from shared.errors import PipelineError, Unavailable
from shared.events import utc_timestamp

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_POISON = 3

TP = tuple[str, int]


@dataclass(frozen=True)
class Record:
    """The parts of a consumed Kafka message the worker uses, with their types pinned
    (a Message without an error always has a topic, partition and offset)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, msg: Message) -> Record:
        raw = msg.headers() or []
        items = raw.items() if isinstance(raw, dict) else raw
        key = msg.key()
        return cls(
            topic=str(msg.topic()),
            partition=int(msg.partition() or 0),
            offset=int(msg.offset() or 0),
            key=key.encode() if isinstance(key, str) else key,
            value=msg.value(),
            headers=tuple((k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in items),
        )


class PoisonLimitExceeded(PipelineError):
    """Too many poison records in the window: stop instead of draining the topic."""


def consumer_config(settings: ConsumerSettings) -> dict[str, Any]:
    """The librdkafka settings of the worker's Consumer."""
    return {
        "bootstrap.servers": settings.common.kafka_bootstrap_servers,
        "group.id": settings.consumer_group,
        "client.id": f"consumer-{socket.gethostname()}-{os.getpid()}",
        "auto.offset.reset": "earliest",
        # A replica joining or leaving moves only the partitions that change owner.
        "partition.assignment.strategy": "cooperative-sticky",
        # Offsets are committed by us, synchronously, after the batch is durable.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(100, min(3000, settings.session_timeout_ms // 3)),
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "enable.partition.eof": False,
    }


class Worker:
    """One member of the consumer group. `run()` blocks until stopped and returns the
    process exit code; `request_stop()` may be called from a signal handler or another
    thread (it only sets a flag)."""

    def __init__(
        self,
        settings: ConsumerSettings,
        store: EventStore,
        dlq: DeadLetterQueue | None = None,
        status_file: StatusFile | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._dlq: DeadLetterQueue = dlq or KafkaDeadLetterQueue(
            settings.common.kafka_bootstrap_servers,
            settings.dlq_topic,
            settings.consumer_group,
            settings.dlq_flush_timeout_seconds,
        )
        self._status_file = status_file
        self._overrides = dict(overrides or {})
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._consumer: Consumer | None = None
        self._assigned: set[TP] = set()
        self._paused = False
        # Processed (durable) but not yet committed: next offset per partition.
        self._uncommitted: dict[TP, int] = {}
        # Partitions revoked or lost since the batch in hand was consumed. Even if one
        # comes back before the batch is durable, that batch's records of it may have
        # been dropped, so they must not advance its offset.
        self._revoked_during_batch: set[TP] = set()
        self._poison = PoisonWindow(settings.poison_window, settings.poison_max_share)
        self._state: WorkerState = "starting"
        self._detail = ""
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

    def run(self) -> int:
        """Consume until stopped. Returns EXIT_OK after a requested stop, EXIT_POISON
        when the poison guard tripped, EXIT_FATAL on a fatal Kafka error, a record the
        DLQ refused for good, or any unexpected exception (logged with its traceback)."""
        s = self._settings
        if not self._ensure_dlq():
            self._set_state("stopped", "stopped before Kafka answered")
            return EXIT_OK
        config = {**consumer_config(s), "error_cb": self._on_error, **self._overrides}
        self._consumer = Consumer(config)
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
            self._set_state("joining")
            while not self._stop.is_set() and self._fatal is None:
                self._heartbeat()
                messages = self._consumer.consume(s.batch_size, s.poll_timeout_seconds)
                if messages:
                    self._handle(messages)
                self._update_lag()
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

    # -- the batch -----------------------------------------------------------------

    def _handle(self, messages: Sequence[Message]) -> None:
        started = time.monotonic()
        s = self._settings
        self._revoked_during_batch.clear()
        records: list[Record] = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(Record.of(msg))
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer error", extra={"error": str(err), "topic": msg.topic()})
        # A rebalance served inside consume() may have revoked partitions whose records
        # are already in this list; their new owner reads them from the committed offset.
        records = [r for r in records if (r.topic, r.partition) in self._assigned]
        if not records:
            return

        accepted: list[Accepted] = []
        letters: list[DeadLetter] = []
        for rec in records:
            decision = self._decide(rec)
            poison = isinstance(decision, Rejected)
            if self._poison.record(poison):
                raise PoisonLimitExceeded(
                    f"{self._poison.poison_count} of the last {s.poison_window} records were "
                    f"poison (limit {s.poison_max_share:.0%})"
                )
            if isinstance(decision, Accepted):
                accepted.append(decision)
            else:
                letters.append(
                    DeadLetter(
                        key=rec.key,
                        value=rec.value,
                        headers=rec.headers,
                        reason=decision.reason,
                        message=decision.message,
                        topic=rec.topic,
                        partition=rec.partition,
                        offset=rec.offset,
                    )
                )

        outcome = self._make_durable(accepted, letters)
        if outcome is None:
            return  # stopping while Redis/DLQ were down: nothing committed, nothing lost
        result, letters = outcome

        for ev in result.stored:
            log.info("event processed", extra=_event_fields(ev))
        for ev in result.redelivered:
            # Stored by an earlier attempt whose commit (or reply) was lost: still this
            # event's processing, logged again rather than not at all.
            log.info("event processed", extra={**_event_fields(ev), "redelivery": True})
        for ev in result.duplicates:
            log.info("duplicate skipped", extra=_event_fields(ev))
        for letter in letters:
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
        metrics.EVENTS_PROCESSED.inc(len(result.stored))
        metrics.DUPLICATES_SKIPPED.inc(len(result.duplicates))

        for rec in records:
            tp = (rec.topic, rec.partition)
            if tp in self._assigned and tp not in self._revoked_during_batch:
                self._uncommitted[tp] = max(self._uncommitted.get(tp, 0), rec.offset + 1)
        self._commit()
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)

    def _decide(self, rec: Record) -> Decision:
        """decide(), with a safety net: a record whose decision raises anything is
        dead-lettered as `processing_error`. Otherwise one such record would crash every
        replica that takes its partition, over and over, and stop the partition for good."""
        try:
            return decide(rec.value, rec.partition, rec.offset, self._settings.max_message_bytes)
        except Exception as exc:
            log.exception(
                "unexpected error deciding a record; dead-lettering it",
                extra={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
            )
            return Rejected(
                "processing_error",
                safe_text(f"Unexpected error while processing the record: {exc!r}"),
                rec.partition,
                rec.offset,
            )

    def _make_durable(
        self, accepted: list[Accepted], letters: list[DeadLetter]
    ) -> tuple[BatchResult, list[DeadLetter]] | None:
        """Dead-letter then store, retrying with backoff until both answered. Returns
        None when asked to stop before that."""
        s = self._settings
        dlq_done = not letters
        attempt = 0
        while True:
            try:
                if not dlq_done:
                    self._dlq.send(letters)
                    dlq_done = True
                dead = Tally(letter.reason for letter in letters)
                result = self._store.store_batch(accepted, utc_timestamp(), dead)
                break
            except Unavailable as exc:
                metrics.BATCH_RETRIES.inc()
                delay = backoff_delay(attempt, s.backoff_initial_seconds, s.backoff_max_seconds)
                # A refusal (a wrong-type key, named in the error) lasts until fixed by hand.
                level = logging.ERROR if isinstance(exc, StoreRefused) else logging.WARNING
                log.log(
                    level,
                    "batch not durable, retrying",
                    extra={"error": str(exc), "attempt": attempt + 1, "retry_in_s": delay},
                )
                self._set_state("backing_off", str(exc))
                if not self._wait_paused(delay):
                    return None
                attempt += 1
                # Partitions revoked meanwhile belong to someone else now.
                accepted = [a for a in accepted if (self._topic, a.partition) in self._assigned]
                letters = [x for x in letters if (x.topic, x.partition) in self._assigned]
        if self._paused:
            self._resume()
        if self._state != "running":
            self._set_state("running")
        return result, letters

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
                rec = Record.of(msg)
                consumer.seek(TopicPartition(rec.topic, rec.partition, rec.offset))
                consumer.pause([TopicPartition(rec.topic, rec.partition)])
        return False

    def _resume(self) -> None:
        consumer = self._require_consumer()
        consumer.resume([TopicPartition(t, p) for t, p in self._assigned])
        self._paused = False

    def _commit(self, only: set[TP] | None = None) -> None:
        """Commit the processed offsets (all, or those of `only`) synchronously. A failure
        is logged and retried with the next commit: replaying is harmless."""
        pending = {tp: o for tp, o in self._uncommitted.items() if only is None or tp in only}
        if not pending:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
        try:
            committed = self._require_consumer().commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning(
                "offset commit failed; the batch may be replayed", extra={"error": str(exc)}
            )
            return
        for tp in committed or []:
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
        if self._state == "joining":
            self._set_state("running")
        log.info(
            "partitions assigned",
            extra={"partitions": _names(partitions), "assigned": len(self._assigned)},
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        # Everything processed for these partitions is committed before they go.
        self._commit(only=revoked)
        self._forget(revoked)
        log.info(
            "partitions revoked",
            extra={"partitions": _names(partitions), "assigned": len(self._assigned)},
        )

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Someone else may own them already: committing now could go backwards.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._forget(lost)
        log.warning("partitions lost", extra={"partitions": _names(partitions)})

    def _forget(self, tps: set[TP]) -> None:
        self._assigned -= tps
        self._revoked_during_batch |= tps
        for tp in tps:
            self._uncommitted.pop(tp, None)
            metrics.CONSUMER_LAG.labels(tp[0], str(tp[1])).set(0)
        metrics.ASSIGNED_PARTITIONS.set(len(self._assigned))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = str(err)
        else:
            # Broker connection trouble: librdkafka reconnects by itself.
            log.warning("Kafka client error", extra={"error": str(err)})

    # -- housekeeping ----------------------------------------------------------------

    @property
    def _topic(self) -> str:
        return self._settings.common.kafka_topic

    def _require_consumer(self) -> Consumer:
        assert self._consumer is not None, "the consumer exists while run() runs"
        return self._consumer

    def _ensure_dlq(self) -> bool:
        s = self._settings
        attempt = 0
        while not self._stop.is_set():
            try:
                ensure_dlq_topic(
                    s.common.kafka_bootstrap_servers,
                    s.common.kafka_topic,
                    s.dlq_topic,
                    s.common.kafka_topic_partitions,
                )
                return True
            except Unavailable as exc:
                delay = backoff_delay(attempt, s.backoff_initial_seconds, s.backoff_max_seconds)
                log.warning(
                    "cannot reach Kafka to check the DLQ topic, retrying",
                    extra={"error": str(exc), "retry_in_s": delay},
                )
                self._set_state("backing_off", str(exc))
                self._stop.wait(delay)
                attempt += 1
        return False

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

    def _set_state(self, state: WorkerState, detail: str = "") -> None:
        self._state = state
        self._detail = detail
        self._heartbeat(force=True)

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
        self._set_state("stopping", self._detail)
        if self._consumer is not None:
            try:
                # Revokes every partition (our on_revoke commits what was processed) and
                # leaves the group at once, so the others take over without waiting for
                # the session timeout.
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
        try:
            self._dlq.close()
        except KafkaException as exc:
            log.warning("DLQ producer close failed", extra={"error": str(exc)})
        self._set_state("stopped" if code == EXIT_OK else "failed", self._detail)
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

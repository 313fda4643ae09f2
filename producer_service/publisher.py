"""Publishing enriched events to Kafka and waiting for their acknowledgements.

`EventPublisher` is the contract the HTTP layer relies on; `KafkaEventPublisher` is the
real one. Request threads hand records to one shared librdkafka producer and wait for
their own delivery reports, so concurrent requests fill the same `linger.ms` batches
instead of each forcing a round trip (no flush per request). How each report gets from
librdkafka's thread back to its request is `producer_service.delivery`'s job.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from producer_service.config import ProducerSettings
from producer_service.delivery import (
    REASON_BROKER,
    Delivery,
    DeliveryReports,
    GreenletRequests,
    Pending,
    Requests,
    StopFlag,
    requests_of_this_process,
)
from shared.errors import InvalidEvent, Unavailable
from shared.events import event_key, record_headers
from shared.json_codec import compact_json, json_problem
from shared.kafka import AUTHENTICATION_ERRORS, client_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    """Whether the log can take records now. When not, `state` names why in a stable
    word fit for anyone who asks (`unreachable`, `auth_failed`, `client_failed`,
    `closed`), and `reason` says it in full for the log: it may name hosts, the topic or
    the broker's own words."""

    ok: bool
    reason: str | None = None
    state: str = "ok"


class EncodedRecord(NamedTuple):
    """A record as Kafka will carry it (a NamedTuple for the cost, as `Delivery`)."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_records(
    records: Sequence[Mapping[str, Any]], values: Sequence[bytes] | None = None
) -> list[EncodedRecord]:
    """Every record's key (`userId`, UTF-8), value (compact JSON) and headers. `values`,
    when given, are the records' values already encoded (`values[i]` must equal
    `compact_json(records[i])`, as `shared.events.record_json` makes them) and are used
    as they are.

    Raises `InvalidEvent` naming the first record that cannot be encoded. Publishers call
    this before sending anything, so a batch with one such record sends none of them."""
    if values is not None and len(values) != len(records):
        raise ValueError(f"{len(values)} values for {len(records)} records")
    encoded = []
    for index, record in enumerate(records):
        try:
            value = compact_json(record) if values is None else values[index]
            encoded.append(EncodedRecord(event_key(record).encode(), value, record_headers(record)))
        except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
            problem = json_problem(record) or "its key or headers are not UTF-8"
            raise InvalidEvent(
                f"Event {index} cannot be written to Kafka ({problem}); nothing was published."
            ) from None
    return encoded


class EventPublisher(Protocol):
    """Durably appends records to the event log.

    Implementations are shared by all request threads of a process and must be safe to
    call concurrently.
    """

    def publish(
        self,
        records: Sequence[Mapping[str, Any]],
        timeout: float,
        values: Sequence[bytes] | None = None,
    ) -> list[Delivery]:
        """Send `records` (enriched events), blocking until every one is acknowledged or
        `timeout` seconds have passed. `values`, when given, are the records' encoded
        values (see `encode_records`), so the caller's encoding is not done twice.
        Returns one `Delivery` per record, in input order;
        a record is `ok` only once the log has durably acknowledged it. Per-record failures
        (timeout, full queue, broker error) are reported in the deliveries, never raised.
        Raises `InvalidEvent` before sending any record when one cannot be encoded
        (`encode_records`), and `Unavailable` when called after `close()` or while the
        client has failed and is not yet replaced."""
        ...

    def ready(self, timeout: float) -> Readiness:
        """Ok when the log answers a metadata request for the topic within `timeout`
        seconds and the client has not failed; otherwise not ok, with the reason. May
        block that long; never raises."""
        ...

    def close(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for outstanding records, then release resources.
        Returns how many records were still undelivered. Idempotent."""
        ...


class KafkaEventPublisher:
    """`EventPublisher` over one confluent-kafka `Producer` per process.

    The producer is created on first use in the process that uses it: librdkafka's
    threads do not survive `fork()`, so a gunicorn worker must never inherit one from the
    master. A poller (`Requests.start_poller`) serves the delivery callbacks, so no
    request has to drive them.
    """

    # A fatal client error (see `_on_client_error`) replaces the producer on next use, but
    # not more often than this many seconds, so an error that recurs at once (e.g. a
    # missing idempotent-write ACL) does not open a connection per request.
    RECOVERY_INTERVAL = 1.0

    def __init__(
        self,
        settings: ProducerSettings,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        self._settings = settings
        self._topic = settings.common.kafka_topic
        self._new_producer = producer_factory
        self._lock = threading.Lock()
        self._producer: Any = None
        self._pid: int | None = None
        self._join_poller: Callable[[], None] | None = None
        self._stopping = StopFlag()
        self._closed = False
        # Chosen when the first producer starts: by then a gevent worker has patched.
        self._requests: Requests = Requests()
        self._reports = DeliveryReports()
        # Which producer the error callbacks speak about, and its fatal error if any.
        self._generation = 0
        self._fatal: str | None = None
        self._recovered_at = -float("inf")
        # The broker's last refusal of our credentials, so /ready can name it rather than
        # a bare metadata timeout; cleared once a metadata request succeeds.
        self._auth_failure: str | None = None

    def kafka_config(self) -> dict[str, Any]:
        """The shared connection settings (shared.kafka) plus the producer's own."""
        s = self._settings
        return client_config(
            s.common,
            {
                "client.id": f"producer-service-{os.getpid()}",
                # Durability: every in-sync replica has the record before we answer 201,
                # and librdkafka's own retries cannot duplicate or reorder it.
                "acks": "all",
                "enable.idempotence": True,
                # Throughput: concurrent requests share batches for a few milliseconds.
                "linger.ms": s.linger_ms,
                "compression.type": s.compression,
                # librdkafka gives up on a record when the request stops waiting for it, so
                # a 503 is rarely followed by a late write and the local queue cannot grow
                # without bound while the broker is away.
                "message.timeout.ms": s.ack_timeout_ms,
                "logger": logging.getLogger("producer_service.librdkafka"),
            },
        )

    def _ensure_producer(self) -> Any:
        """The live producer of this process, started (or replaced after a fatal error)
        if need be. Raises `Unavailable` when closed or while a failed one waits for
        `RECOVERY_INTERVAL` to pass."""
        if self._closed:
            raise Unavailable("the publisher is closed")
        producer = self._producer
        if producer is not None and self._pid == os.getpid() and self._fatal is None:
            return producer
        retired = None
        with self._lock:
            if self._closed:
                raise Unavailable("the publisher is closed")
            if self._producer is not None and self._pid == os.getpid() and self._fatal:
                wait = self._recovered_at + self.RECOVERY_INTERVAL - time.monotonic()
                if wait > 0:
                    raise Unavailable(
                        f"the Kafka producer failed ({self._fatal}); a new one starts "
                        f"in {wait:.1f} s"
                    )
                self._recovered_at = time.monotonic()
                retired = (self._producer, self._join_poller, self._stopping, self._fatal)
                self._producer = None
            if self._producer is None or self._pid != os.getpid():
                # A producer inherited through fork() is unusable: start a fresh one.
                self._start_producer()
            producer = self._producer
        if retired is not None:
            self._retire(*retired)
        return producer

    def _start_producer(self) -> None:
        # Called with self._lock held.
        self._generation += 1
        self._fatal = None
        if self._pid != os.getpid():
            self._requests = requests_of_this_process()
        config = self.kafka_config()
        config["error_cb"] = functools.partial(self._client_error, self._generation)
        self._producer = self._new_producer(config)
        self._pid = os.getpid()
        self._stopping = StopFlag()
        self._join_poller = self._requests.start_poller(
            self._producer, self._reports, self._stopping
        )
        greenlets = isinstance(self._requests, GreenletRequests)
        logger.info(
            "kafka producer started",
            extra={
                "topic": self._topic,
                "pid": self._pid,
                "generation": self._generation,
                "requests": "greenlets" if greenlets else "threads",
            },
        )

    def _client_error(self, generation: int, err: KafkaError) -> None:
        # librdkafka's error_cb, on the thread serving callbacks.
        self._requests.call_soon(self._on_client_error, generation, err)

    def _on_client_error(self, generation: int, err: KafkaError) -> None:
        """librdkafka's `error_cb` for producer `generation` (via `_client_error`).

        Most client errors (all brokers down, a timed-out request) are transient: they are
        logged, and the requests that suffer from them answer 503 once their deliveries
        time out. A fatal error (e.g. the idempotent producer lost its sequence state)
        leaves the producer failing every produce() with _FATAL for good, so it is marked
        failed: ready() reports it and the next use replaces the producer.

        Why replace it in-process rather than fail /health and wait for a restart: not
        every deployment has an orchestrator probing /health (gunicorn alone does not),
        a restart drops the worker's other in-flight requests, and a new Producer is
        exactly what librdkafka prescribes after a fatal error. /ready still answers 503
        once, so the failure is visible to whoever watches it.
        """
        if not err.fatal():
            if err.name() in AUTHENTICATION_ERRORS:
                self._auth_failure = err.str()
            logger.warning(
                "kafka client error", extra={"kafka_error": err.str(), "code": err.code()}
            )
            return
        logger.error(
            "kafka producer failed; it is replaced on next use",
            extra={"kafka_error": err.str(), "code": err.code(), "generation": generation},
        )
        with self._lock:
            if generation == self._generation:
                self._fatal = err.str()

    def _retire(
        self, producer: Any, join_poller: Callable[[], None] | None, stopping: StopFlag, why: str
    ) -> None:
        """Release a failed producer: records still queued or in flight get a failed
        delivery report now (their requests answer 503) instead of waiting out their
        timeout. Bounded to about a second."""
        stopping.raised = True
        if join_poller is not None:
            join_poller()
        try:
            producer.purge()
        except KafkaException as exc:
            logger.warning("purging the failed producer failed", extra={"reason": str(exc)})
        left = int(producer.flush(1.0))
        self._reports.forward(self._requests)
        logger.warning(
            "kafka producer replaced",
            extra={"reason": why, "undelivered": left, "topic": self._topic},
        )

    def publish(
        self,
        records: Sequence[Mapping[str, Any]],
        timeout: float,
        values: Sequence[bytes] | None = None,
    ) -> list[Delivery]:
        # All or nothing: every record is encoded before the first one is handed over.
        encoded = encode_records(records, values)
        producer = self._ensure_producer()
        deadline = time.monotonic() + timeout
        pending = Pending(len(records), self._requests.new_event())
        self._hand_over(producer, records, encoded, pending)
        self._requests.wait(pending, max(0.0, deadline - time.monotonic()))
        return pending.outcome(records, timeout)

    def _hand_over(
        self,
        producer: Any,
        records: Sequence[Mapping[str, Any]],
        encoded: Sequence[EncodedRecord],
        pending: Pending,
    ) -> None:
        """Queue every record in `producer`, its delivery report bound for `pending`; a
        record the producer refuses at once is settled here."""
        on_delivery = self._reports.on_delivery
        for index, (record, kafka_record) in enumerate(zip(records, encoded, strict=True)):
            callback = functools.partial(on_delivery, pending, index, record["eventId"])
            try:
                producer.produce(
                    self._topic,
                    key=kafka_record.key,
                    value=kafka_record.value,
                    headers=kafka_record.headers,
                    on_delivery=callback,
                )
            except BufferError:
                # The local queue is full: Kafka is slower than intake. Back-pressure the
                # rest of this call rather than block a request thread.
                pending.refuse_from(index, records)
                return
            except KafkaException as exc:
                pending.settle(
                    index,
                    Delivery(record["eventId"], reason=REASON_BROKER, error=str(exc.args[0])),
                )

    def ready(self, timeout: float) -> Readiness:
        # A failed producer is reported once; this call also starts its replacement, since
        # a worker taken out of rotation might otherwise never see another publish.
        fatal = self._fatal
        try:
            producer = self._ensure_producer()
        except Unavailable as exc:
            return Readiness(False, str(exc), "closed" if self._closed else "client_failed")
        if fatal is not None:
            return Readiness(
                False, f"the Kafka producer failed ({fatal}); it was replaced", "client_failed"
            )
        unavailable = Readiness(
            False,
            f"Kafka metadata for topic {self._topic!r} was not available within {timeout:g} s",
            "unreachable",
        )
        try:
            metadata = self._requests.blocking(producer.list_topics, self._topic, timeout=timeout)
        except KafkaException:
            refused = self._auth_failure
            if refused is not None:
                return Readiness(
                    False, f"Kafka refused the producer's credentials: {refused}", "auth_failed"
                )
            return unavailable
        self._auth_failure = None
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return unavailable
        return Readiness(True)

    def close(self, timeout: float) -> int:
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            producer, join_poller = self._producer, self._join_poller
            owned = self._pid == os.getpid()
            self._producer = None
        if producer is None or not owned:
            return 0
        # flush() serves the remaining callbacks itself; stop the poller first so the two
        # do not race for them.
        self._stopping.raised = True
        if join_poller is not None:
            join_poller()
        left = int(producer.flush(timeout))
        self._reports.forward(self._requests)
        log = logger.warning if left else logger.info
        log("kafka producer closed", extra={"undelivered": left, "topic": self._topic})
        return left

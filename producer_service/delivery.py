"""The delivery hand-off: how a delivery report gets from the thread librdkafka serves it
on to the request waiting for it.

librdkafka runs delivery callbacks in whichever thread calls `poll()` or `flush()`: the
poller that the `Requests` of the process starts (a native thread when requests are OS
threads, a greenlet under gevent). `DeliveryReports.on_delivery` queues each report
there; `DeliveryReports.forward` then hands every queued report to the requests in one
hop, and each settles the `Pending` its request waits on.
"""

from __future__ import annotations

import collections
import importlib
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, Message

# Delivery.reason values; also the `reason` label of the delivery-failure metric.
REASON_TIMEOUT = "timeout"
REASON_QUEUE_FULL = "queue_full"
REASON_BROKER = "broker_error"


class Delivery(NamedTuple):
    """What became of one record: acknowledged (`ok`) with its partition and offset, or
    not, with a `reason` (one of the REASON_* constants) and a human-readable `error`.

    An immutable value like the frozen dataclasses elsewhere, but a NamedTuple: one is
    made per record, and a six-field frozen dataclass took 0.94 us to build against
    0.32 us (a batch of 1,000 builds a thousand, on the GIL, in the delivery poller)."""

    event_id: str
    partition: int = -1
    offset: int = -1
    latency: float | None = None
    reason: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class Pending:
    """The delivery reports one `publish` call is waiting for. Settled and read only where
    requests run (see `Requests.call_soon`)."""

    __slots__ = ("done", "lock", "remaining", "results", "started")

    def __init__(self, size: int, done: Any) -> None:
        self.results: list[Delivery | None] = [None] * size
        self.remaining = size
        self.lock = threading.Lock()
        self.done = done
        self.started = time.perf_counter()
        if size == 0:
            self.done.set()

    def settle(self, index: int, delivery: Delivery) -> None:
        """Record `delivery` for record `index`, unless that record is already settled."""
        with self.lock:
            if self.results[index] is not None:
                return
            self.results[index] = delivery
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()

    def refuse_from(self, start: int, records: Sequence[Mapping[str, Any]]) -> None:
        """Settle record `start` and every later one as refused by a full local queue."""
        for index in range(start, len(records)):
            self.settle(
                index,
                Delivery(
                    records[index]["eventId"],
                    reason=REASON_QUEUE_FULL,
                    error="the producer's local queue is full",
                ),
            )

    def outcome(self, records: Sequence[Mapping[str, Any]], timeout: float) -> list[Delivery]:
        """One `Delivery` per record, in order: its report, or a timeout where none came
        within `timeout` seconds."""
        with self.lock:
            results = list(self.results)
        return [
            delivery
            if delivery is not None
            else Delivery(
                record["eventId"],
                reason=REASON_TIMEOUT,
                error=f"Kafka did not acknowledge within {timeout * 1000:.0f} ms",
            )
            for record, delivery in zip(records, results, strict=True)
        ]


class Latch:
    """A one-shot signal from the thread that settles a call's last delivery to the one
    request thread waiting for it: a lock taken at birth and released once.
    `threading.Event` does the same through a Condition (a second lock, a waiter list,
    `notify_all`); a round trip through this costs ~9 us of CPU here instead of ~15.

    `set` must be called at most once (`Pending` settles each index once) and `wait`
    by one thread, once."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=timeout)


class StopFlag:
    """Tells a poller to stop. A plain attribute, so it means the same under gevent's
    monkey-patching, where `threading.Event` is a greenlet primitive."""

    __slots__ = ("raised",)

    def __init__(self) -> None:
        self.raised = False


class Requests:
    """How delivery reports reach the requests waiting for them, in a process whose
    requests are OS threads (gunicorn `gthread` or `sync` workers, tests).

    librdkafka runs delivery and error callbacks in whichever thread calls `poll()` or
    `flush()`: here a poller, a native thread blocked in `poll()`. A request thread
    blocks on a `Latch`, which the poller may set directly."""

    # How long the poller's `poll()` may block: the longest a stop request waits.
    POLL_TIMEOUT = 0.05

    def new_event(self) -> Any:
        """A fresh one-shot event for one request to `wait(timeout)` on, `set` once."""
        return Latch()

    def start_poller(
        self, producer: Any, reports: DeliveryReports, stopping: StopFlag
    ) -> Callable[[], None]:
        """Serve `producer`'s callbacks until `stopping` is raised, handing the reports on
        through `reports`; returns a function that waits for the poller's end."""

        def loop() -> None:
            while not stopping.raised:
                producer.poll(self.POLL_TIMEOUT)
                reports.forward(self)

        thread = threading.Thread(target=loop, name="kafka-delivery-poller", daemon=True)
        thread.start()
        return thread.join

    def wait(self, pending: Pending, timeout: float) -> None:
        """Block the calling request until `pending` is settled or `timeout` seconds pass."""
        pending.done.wait(timeout)

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Have `fn(*args)` run where requests run; callable from any thread. Here: now."""
        fn(*args)

    def blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, a call that may block in C for long, without holding up
        other requests. Here other threads run meanwhile, so it is simply called."""
        return fn(*args, **kwargs)


class GreenletRequests(Requests):
    """The same in a process monkey-patched by gevent (gunicorn's `gevent` worker), whose
    requests are greenlets of the one OS thread that runs gevent's hub.

    The poller is a greenlet too, calling `poll(0)`, which never blocks: the callbacks
    run on the hub's own thread and settle each request's `gevent.event.Event` directly.
    A native poller thread takes the GIL back for every delivery report librdkafka hands
    it (confluent-kafka's callback dance), fighting the requests for it; in a native
    profile at 64 connections half of that thread's samples waited there, and on a quiet
    machine the greenlet cut CPU per acked request by about a fifth
    (docs/performance.md).

    While requests wait for reports the poller polls every `BUSY_INTERVAL` seconds; each
    `poll(0)` serves every report that came meanwhile. With none waiting it sleeps until
    a request starts waiting, or `IDLE_INTERVAL` at most (client errors are served
    then). Calls that block in C (`list_topics`) run in gevent's pool of native threads;
    `flush` at close blocks the hub, as before."""

    # The most a delivery report waits to be seen: small beside a broker's acks=all
    # round trip, and about a thousand `poll(0)` calls a second while busy.
    BUSY_INTERVAL = 0.001
    IDLE_INTERVAL = 0.1

    def __init__(self, gevent: Any) -> None:
        self._gevent = gevent
        self._hub = gevent.get_hub()
        self._event_class = importlib.import_module("gevent.event").Event
        self._waiting = 0
        self._wake = self._event_class()

    def new_event(self) -> Any:
        return self._event_class()

    def start_poller(
        self, producer: Any, reports: DeliveryReports, stopping: StopFlag
    ) -> Callable[[], None]:
        sleep = self._gevent.sleep
        wake = self._wake

        def loop() -> None:
            while not stopping.raised:
                producer.poll(0)
                reports.forward(self)
                if self._waiting:
                    sleep(self.BUSY_INTERVAL)
                else:
                    wake.clear()
                    wake.wait(self.IDLE_INTERVAL)

        poller = self._gevent.spawn(loop)

        def join() -> None:
            wake.set()
            poller.join()

        return join

    def wait(self, pending: Pending, timeout: float) -> None:
        self._waiting += 1
        if self._waiting == 1:
            self._wake.set()
        try:
            pending.done.wait(timeout)
        finally:
            self._waiting -= 1

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        # Callbacks run in the poller greenlet, or in `flush()`, on the hub's thread.
        fn(*args)

    def blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._hub.threadpool.apply(fn, args, kwargs)


def requests_of_this_process() -> Requests:
    """`GreenletRequests` when gevent has patched `threading` (its gunicorn worker does
    so before the app is built), else `Requests`."""
    if "gevent" in sys.modules:
        monkey = importlib.import_module("gevent.monkey")
        if monkey.is_module_patched("threading"):
            return GreenletRequests(sys.modules["gevent"])
    return Requests()


class DeliveryReports:
    """Delivery reports on their way from the thread that served them to the requests
    waiting for them. `on_delivery` may run on any thread; `forward` is called by the
    thread that ran `poll()` or `flush()`, after it returned."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[Pending, int, Delivery]] = collections.deque()

    def on_delivery(
        self, pending: Pending, index: int, event_id: str, err: KafkaError | None, msg: Message
    ) -> None:
        """librdkafka's `on_delivery` for record `index` of `pending` (bound with
        `functools.partial`): queues what became of it."""
        if err is None:
            delivery = Delivery(
                event_id,
                partition=_or_unknown(msg.partition()),
                offset=_or_unknown(msg.offset()),
                latency=time.perf_counter() - pending.started,
            )
        else:
            reason = REASON_TIMEOUT if err.code() == KafkaError._MSG_TIMED_OUT else REASON_BROKER
            delivery = Delivery(event_id, reason=reason, error=err.str())
        self._queue.append((pending, index, delivery))

    def forward(self, requests: Requests) -> None:
        """Hand the queued reports to the requests waiting for them, all in one hop."""
        if self._queue:
            requests.call_soon(self._settle)

    def _settle(self) -> None:
        queue = self._queue
        while True:
            try:
                pending, index, delivery = queue.popleft()
            except IndexError:
                return
            pending.settle(index, delivery)


def _or_unknown(value: int | None) -> int:
    return -1 if value is None else value

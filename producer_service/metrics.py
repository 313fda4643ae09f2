"""Prometheus metrics of the producer.

Under gunicorn every worker is a process, so `PROMETHEUS_MULTIPROC_DIR` must be set before
this module is imported (gunicorn.conf.py does it); the metrics then live in files there
and /metrics aggregates all workers. Without it (tests, a single process) the default
in-process registry is used.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Sequence

from prometheus_client import Counter, Histogram

from producer_service.delivery import Delivery

HTTP_REQUESTS = Counter(
    "producer_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "producer_http_request_duration_seconds",
    "Time from request start to response, by route template.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_PUBLISHED = Counter(
    "producer_events_published_total",
    "Events Kafka acknowledged, by event type.",
    ["event_type"],
)
DELIVERY_LATENCY = Histogram(
    "producer_delivery_latency_seconds",
    "Time from handing a record to the Kafka client to its acknowledgement.",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DELIVERY_FAILURES = Counter(
    "producer_delivery_failures_total",
    "Events Kafka did not acknowledge, by reason (timeout, queue_full, broker_error).",
    ["reason"],
)

TRACKING_MESSAGES = Counter(
    "producer_tracking_messages_total",
    "Tracking API messages not published, by outcome: invalid (listed in the answer), "
    "ignored (a kind whose event type EVENT_TYPES does not admit).",
    ["outcome"],
)


# Where the app's outermost WSGI layer leaves the request's start (`time.perf_counter()`)
# in the environ, for the request duration.
STARTED = "producer.started"


class _Tally:
    """What one process counted since its last `flush`: plain dict increments on the
    request path, under one lock (request threads under `gthread`; under gevent nothing
    yields inside it). Under PROMETHEUS_MULTIPROC_DIR every `inc`/`observe` is a locked
    write to a memory-mapped file, five or more per request; `flush` makes one write per
    label set and bucket that changed, once a second."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        # route -> [sum of seconds, count per bucket of HTTP_LATENCY...]
        self.durations: dict[str, list[float]] = {}
        self.published: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        # [sum of seconds, count per bucket of DELIVERY_LATENCY...]
        self.delivery = [0.0] * (len(DELIVERY_LATENCY._upper_bounds) + 1)

    def swap(self) -> _Tally:
        """A copy of the counts, which are then reset. Called with `lock` held."""
        taken = _Tally.__new__(_Tally)
        taken.requests, self.requests = self.requests, {}
        taken.durations, self.durations = self.durations, {}
        taken.published, self.published = self.published, {}
        taken.failed, self.failed = self.failed, {}
        taken.delivery = self.delivery
        self.delivery = [0.0] * len(taken.delivery)
        return taken


_tally = _Tally()
_HTTP_BOUNDS = HTTP_LATENCY._upper_bounds
_DELIVERY_BOUNDS = DELIVERY_LATENCY._upper_bounds
# How often a process's counts reach the exposition: /metrics may lag this much behind
# other workers (never behind the worker serving it, which flushes first).
FLUSH_INTERVAL = 1.0

# The label of a method or status outside the fixed set.
OTHER = "other"
_STATUSES = {code: str(code) for code in range(100, 600)}


def method_label(method: str, served: frozenset[str]) -> str:
    """`method` when it is one of the methods the app `served` by some route, else
    `other`: a client may send any token as a method, and each would be a new series."""
    return method if method in served else OTHER


def status_label(status: int) -> str:
    """The status code as text when it is an HTTP status (100-599), else `other`."""
    return _STATUSES.get(status, OTHER)


def count_request(route: str, method: str, status: int, seconds: float | None) -> None:
    """Count one answered request and, when `seconds` is known, observe its duration.

    Every label must come from a fixed set, never from the client as such: `route` a
    route template (or "<unmatched>"), `method` from `method_label`; `status` is bounded
    at `flush`. A label a client chooses grows /metrics, the multiprocess files and this
    module's tallies without bound."""
    key = (route, method, status)
    with _tally.lock:
        requests = _tally.requests
        requests[key] = requests.get(key, 0) + 1
        if seconds is None:
            return
        buckets = _tally.durations.get(route)
        if buckets is None:
            buckets = _tally.durations[route] = [0.0] * (len(_HTTP_BOUNDS) + 1)
        buckets[0] += seconds
        # bisect_left finds the first bound >= amount: `observe`'s `amount <= bound`.
        buckets[bisect.bisect_left(_HTTP_BOUNDS, seconds) + 1] += 1


# The event_type label of a free-text event name (EVENT_TYPES listing `*`): one label,
# however many names clients send.
FREE_TEXT_LABEL = "free-text"
# The event types EVENT_TYPES lists by name (set by `label_event_types`); None: any.
_listed_types: frozenset[str] | None = None


def label_event_types(listed: Iterable[str]) -> None:
    """Label deliveries with their event type only when it is one of `listed` (the
    EVENT_TYPES names); any other, a free-text name, is FREE_TEXT_LABEL."""
    global _listed_types
    _listed_types = frozenset(listed)


def observe_deliveries(deliveries: Iterable[Delivery], event_types: Iterable[str]) -> None:
    """Count each delivery as published or failed; `event_types` pairs with `deliveries`."""
    with _tally.lock:
        published = _tally.published
        failed = _tally.failed
        latency = _tally.delivery
        listed = _listed_types
        for delivery, event_type in zip(deliveries, event_types, strict=True):
            if listed is not None and event_type not in listed:
                event_type = FREE_TEXT_LABEL
            if delivery.reason is None:
                published[event_type] = published.get(event_type, 0) + 1
                if delivery.latency is not None:
                    latency[0] += delivery.latency
                    latency[bisect.bisect_left(_DELIVERY_BOUNDS, delivery.latency) + 1] += 1
            else:
                failed[delivery.reason] = failed.get(delivery.reason, 0) + 1


def flush() -> None:
    """Publish this process's counts since the last flush to the prometheus metrics."""
    with _tally.lock:
        taken = _tally.swap()
    for (route, method, status), count in taken.requests.items():
        HTTP_REQUESTS.labels(route, method, status_label(status)).inc(count)
    for route, buckets in taken.durations.items():
        _add_buckets(HTTP_LATENCY.labels(route), buckets)
    for event_type, count in taken.published.items():
        EVENTS_PUBLISHED.labels(event_type).inc(count)
    for reason, count in taken.failed.items():
        DELIVERY_FAILURES.labels(reason).inc(count)
    _add_buckets(DELIVERY_LATENCY, taken.delivery)


def _add_buckets(histogram: Histogram, buckets: Sequence[float]) -> None:
    # What `observe` would have written for the amounts summed in `buckets`, using the
    # histogram's own bucket values, so the exposition is the same.
    if not any(buckets[1:]):
        return
    histogram._sum.inc(buckets[0])
    for index, count in enumerate(buckets[1:]):
        if count:
            histogram._buckets[index].inc(count)


def start_flusher(interval: float = FLUSH_INTERVAL) -> None:
    """Flush every `interval` seconds for the life of this process, from a daemon thread
    (a greenlet under gevent, whose monkey-patching makes `threading.Thread` one)."""

    def loop() -> None:
        while True:
            time.sleep(interval)
            flush()

    threading.Thread(target=loop, name="metrics-flusher", daemon=True).start()

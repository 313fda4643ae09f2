"""Prometheus metrics of the producer.

Under gunicorn every worker is a process, so `PROMETHEUS_MULTIPROC_DIR` must be set before
this module is imported (gunicorn.conf.py does it); the metrics then live in files there
and /metrics aggregates all workers. Without it (tests, a single process) the default
in-process registry is used.
"""

from __future__ import annotations

import bisect
import collections
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


# Label children by route/method/status and by route: `.labels()` hashes and validates its
# arguments on every call, twice per request. Every label is from a fixed set (see
# `count_request`), so these stay small.
_REQUEST_COUNTERS: dict[tuple[str, str, str], Counter] = {}
_REQUEST_TIMERS: dict[str, Histogram] = {}

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
    here. A label a client chooses grows /metrics, the multiprocess files and this
    module's caches without bound."""
    key = (route, method, status_label(status))
    counter = _REQUEST_COUNTERS.get(key)
    if counter is None:
        counter = _REQUEST_COUNTERS.setdefault(key, HTTP_REQUESTS.labels(*key))
    counter.inc()
    if seconds is None:
        return
    timer = _REQUEST_TIMERS.get(route)
    if timer is None:
        timer = _REQUEST_TIMERS.setdefault(route, HTTP_LATENCY.labels(route))
    timer.observe(seconds)


def observe_deliveries(deliveries: Iterable[Delivery], event_types: Iterable[str]) -> None:
    """Count each delivery as published or failed; `event_types` pairs with `deliveries`.

    Counts are summed first so a batch of a thousand costs a few increments, not a
    thousand label look-ups."""
    published: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    latencies = []
    for delivery, event_type in zip(deliveries, event_types, strict=True):
        if delivery.ok:
            published[event_type] += 1
            if delivery.latency is not None:
                latencies.append(delivery.latency)
        else:
            failed[delivery.reason or "unknown"] += 1
    observe_all(DELIVERY_LATENCY, latencies)
    for event_type, count in published.items():
        _child(_PUBLISHED, EVENTS_PUBLISHED, event_type).inc(count)
    for reason, count in failed.items():
        _child(_FAILED, DELIVERY_FAILURES, reason).inc(count)


# Event types come from the settings and reasons from delivery.REASON_*: both bounded.
_PUBLISHED: dict[str, Counter] = {}
_FAILED: dict[str, Counter] = {}


def _child(cache: dict[str, Counter], metric: Counter, label: str) -> Counter:
    child = cache.get(label)
    if child is None:
        child = cache.setdefault(label, metric.labels(label))
    return child


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe(a)` for every amount, for a histogram without labels, writing
    each touched bucket once: under PROMETHEUS_MULTIPROC_DIR every write is a locked
    update of a memory-mapped file, and a batch of 1,000 records took 5 % of a worker's
    time in them. Uses the histogram's own bucket bounds and values (as `observe` does),
    so the exposition is the same as observing one by one."""
    if not amounts:
        return
    bounds = histogram._upper_bounds
    # bisect_left finds the first bound >= amount: `observe`'s `amount <= bound`.
    counts = collections.Counter(bisect.bisect_left(bounds, a) for a in amounts)
    histogram._sum.inc(sum(amounts))
    for index, count in counts.items():
        histogram._buckets[index].inc(count)

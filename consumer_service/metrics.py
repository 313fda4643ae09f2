"""Prometheus metrics of the worker, served by the read API's /metrics.

The worker and the gunicorn API workers are separate processes. `__main__` points
PROMETHEUS_MULTIPROC_DIR at one directory before anything imports prometheus_client, so
the worker's samples land in files the API's MultiProcessCollector reads.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PROCESSED = Counter(
    "consumer_events_processed_total",
    "Events this replica stored in Redis for the first time, including those whose store "
    "was answered only on a retry.",
)
DUPLICATES_SKIPPED = Counter(
    "consumer_duplicates_skipped_total", "Records whose eventId was already seen in the window."
)
ERASED_DROPPED = Counter(
    "consumer_erased_dropped_total",
    "Records of an erased user's events dropped and committed: stamped at or before the "
    "erasure's cutoff, or sealed with the user's erased payload data key.",
)
DEAD_LETTERED = Counter(
    "consumer_dead_lettered_total", "Poison records sent to the dead-letter topic.", ["reason"]
)
BATCH_SECONDS = Histogram(
    "consumer_batch_seconds",
    "Time from a batch leaving consume() to its offsets committed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_RETRIES = Counter(
    "consumer_batch_retries_total",
    "Batch attempts that failed because Redis or the DLQ did not answer.",
)
# One value per partition; a replica reports 0 for partitions it no longer owns, so
# sum by (partition) across replicas is the group's lag.
CONSUMER_LAG = Gauge(
    "consumer_lag",
    "High watermark minus this replica's position, per assigned partition.",
    ["topic", "partition"],
    multiprocess_mode="mostrecent",
)
ASSIGNED_PARTITIONS = Gauge(
    "consumer_assigned_partitions",
    "Partitions assigned to this replica.",
    multiprocess_mode="mostrecent",
)

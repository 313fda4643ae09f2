"""Client figures of `make bench` (bench/client_load.py is the client process):

* `track()` cost, in memory and with a spool (one thread, so every call is its own
  fsynced SQLite transaction);
* events/s from one client process to acknowledged and to stored events: in memory;
  spooled from 32 threads (their writes grouped into shared fsynced transactions);
  spooled from one thread with `spool_sync="normal"` (no fsync: safe from a crash of the
  process, not of the machine). Beside `/events/batch` driven by wrk at the client's
  batch size in the same run.

Each client run is made twice, on two producers of their own:

1. "to acknowledged": the producer and the client alone, no consumer. wrk's baseline is
   measured that way (a producer, its broker, and wrk), so the ratio compares the client
   with wrk on equal terms. With a consumer replica and its Redis storing the events at
   the same time, they take CPU from the client and the producer (on a machine of 2 CPUs,
   one run: 75,415 ev/s in memory alone, 36,751 with the consumer), and the ratio would
   measure the consumer as much as the client. `track_us`, `events_per_second_acked` and
   the other figures of a run come from here.
2. "to stored": the same run with a consumer replica storing into the bench's Redis as
   the events arrive; `events_per_second_stored` (first `track()` to the last event
   stored) comes from here, and the whole run is kept under `with_consumer`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import intake
from bench.common import (
    ROOT,
    BenchRedis,
    Service,
    create_topics,
    delete_topics,
    free_port,
    last_json_line,
    pipeline_counts,
    progress,
    stop_all,
    wait_until,
)

BATCH = 500  # the client's default max_batch_events
# Threads tracking into one spool at once: each track() waits for an fsynced commit, and
# the commits are shared, so throughput comes from concurrency (a web app's threads).
SPOOL_THREADS = 32


def _load(
    url: str, events: int, spool: str | None = None, threads: int = 1, sync: str = "full"
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.client_load", url, str(events), "--threads", str(threads)]
    if spool is not None:
        cmd += ["--spool", spool, "--sync", sync]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), str(ROOT)])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"client load failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = last_json_line(done.stdout, "CLIENT_JSON")
    result["command"] = " ".join(cmd[1:])
    return result


def _to_stored(
    url: str, store: BenchRedis, prefix: str, events: int, **load: Any
) -> dict[str, Any]:
    """A client run, and how long until the consumer had stored all of its events."""
    before = sum(pipeline_counts(store.client, prefix))
    result = _load(url, events, **load)
    sent = result["events"]  # a multiple of the thread count
    if not wait_until(lambda: sum(pipeline_counts(store.client, prefix)) >= before + sent, 300):
        raise SystemExit("the client's events were not all stored within 300 s")
    stored_at = time.time()
    seconds = stored_at - result["first_track_at"]
    result["stored_seconds"] = round(seconds, 3)
    result["events_per_second_stored"] = round(sent / seconds)
    result["events_per_second_acked"] = round(sent / result["acked_seconds"])
    return result


def _producer(name: str, bootstrap: str, topic: str, log_dir: Path | None) -> Service:
    port = free_port()
    return Service.start(
        name,
        "producer-service",
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "PRODUCER_BIND_HOST": "127.0.0.1",
            "PRODUCER_PORT": str(port),
        },
        port,
        log_dir,
    )


# The client runs: (name, events or the one-thread size, spool file, threads, sync).
RUNS = (
    ("memory", "events", None, 1, "full"),
    ("spool", "events", "t.spool", SPOOL_THREADS, "full"),
    ("spool_one_thread", "spool_track_events", "one.spool", 1, "full"),
    ("spool_normal", "events", "normal.spool", 1, "normal"),
)


def _client_runs(
    url: str, sizes: dict[str, int], store: tuple[BenchRedis, str] | None
) -> dict[str, dict[str, Any]]:
    """Every run of RUNS against `url`; to stored events when `store` (the Redis and key
    prefix a consumer stores the producer's topic into) is given, else to acknowledged."""
    out = {}
    what = "to acknowledged" if store is None else "to stored"
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        for name, size, spool, threads, sync in RUNS:
            events = sizes[size]
            progress(f"client {name}, {what}: {events:,} events, {threads} thread(s)")
            load: dict[str, Any] = {"threads": threads}
            if spool is not None:
                load.update(spool=f"{tmp}/{spool}", sync=sync)
            if store is None:
                result = _load(url, events, **load)
                result["events_per_second_acked"] = round(
                    result["events"] / result["acked_seconds"]
                )
                out[name] = result
            else:
                out[name] = _to_stored(url, store[0], store[1], events, **load)
    return out


def run(
    bootstrap: str,
    run_id: str,
    store: BenchRedis,
    *,
    events: int,
    spool_track_events: int,
    seconds: float,
    connections: int,
    log_dir: Path | None,
) -> dict[str, Any]:
    wrk_topic = f"bench-{run_id}-client-wrk"
    acked_topic = f"bench-{run_id}-client-acked"
    topic = f"bench-{run_id}-client"
    prefix = f"bench:{run_id}:client"
    topics = [wrk_topic, acked_topic, topic, f"{topic}.dlq"]
    create_topics(bootstrap, topics)
    sizes = {"events": events, "spool_track_events": spool_track_events}
    out: dict[str, Any] = {}
    try:
        # Each phase on a producer of its own, so the consumer of the last sees only
        # the events of that phase.
        wrk_producer = _producer("producer-wrk", bootstrap, wrk_topic, log_dir)
        try:
            wrk_producer.wait_ready()
            progress(f"client baseline: wrk, {BATCH}/request, {connections} conn, {seconds:g} s")
            assert wrk_producer.port is not None
            baseline = intake.wrk(wrk_producer.port, "batch.lua", connections, seconds, BATCH)
            baseline["events_per_second"] = round(baseline["acked_requests_per_second"] * BATCH)
            out["baseline_wrk"] = baseline
        finally:
            wrk_producer.stop()

        acked_producer = _producer("producer-client-acked", bootstrap, acked_topic, log_dir)
        try:
            acked_producer.wait_ready()
            acked = _client_runs(f"http://127.0.0.1:{acked_producer.port}", sizes, None)
        finally:
            acked_producer.stop()

        producer = _producer("producer-client", bootstrap, topic, log_dir)
        cport = free_port()
        consumer = Service.start(
            "consumer-client",
            "consumer-service",
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_TOPIC": topic,
                "KAFKA_CONSUMER_GROUP": f"bench-{run_id}-client",
                "REDIS_URL": store.url,
                "CONSUMER_REDIS_PREFIX": prefix,
                "CONSUMER_PORT": str(cport),
            },
            cport,
            log_dir,
        )
        try:
            producer.wait_ready()
            consumer.wait_ready()
            url = f"http://127.0.0.1:{producer.port}"
            stored = _client_runs(url, sizes, (store, prefix))
        finally:
            stop_all([producer, consumer])
        for name, result in acked.items():
            with_consumer = stored[name]
            result["stored_seconds"] = with_consumer["stored_seconds"]
            result["events_per_second_stored"] = with_consumer["events_per_second_stored"]
            result["with_consumer"] = with_consumer
            out[name] = result
    finally:
        delete_topics(bootstrap, topics)
        store.delete_prefix(prefix)
    return out

"""Client figures of `make bench` (bench/client_load.py is the client process):

* `track()` cost, in memory and with a spool (one thread, so every call is its own
  fsynced SQLite transaction);
* events/s from one client process to acknowledged and to stored events (a consumer
  replica stores them into the bench's Redis): in memory; spooled from 32 threads (their
  writes grouped into shared fsynced transactions); spooled from one thread with
  `spool_sync="normal"` (no fsync: safe from a crash of the process, not of the
  machine). Beside `/events/batch` driven by wrk at the client's batch size in the same
  run.
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
    topic = f"bench-{run_id}-client"
    prefix = f"bench:{run_id}:client"
    create_topics(bootstrap, [wrk_topic, topic, f"{topic}.dlq"])
    out: dict[str, Any] = {}
    try:
        # The baseline on a producer of its own, so the consumer below sees only the
        # client's events.
        port = free_port()
        wrk_producer = Service.start(
            "producer-wrk",
            "producer-service",
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_TOPIC": wrk_topic,
                "PRODUCER_BIND_HOST": "127.0.0.1",
                "PRODUCER_PORT": str(port),
            },
            port,
            log_dir,
        )
        try:
            wrk_producer.wait_ready()
            progress(f"client baseline: wrk, {BATCH}/request, {connections} conn, {seconds:g} s")
            baseline = intake.wrk(port, "batch.lua", connections, seconds, BATCH)
            baseline["events_per_second"] = round(baseline["acked_requests_per_second"] * BATCH)
            out["baseline_wrk"] = baseline
        finally:
            wrk_producer.stop()

        pport, cport = free_port(), free_port()
        common = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic}
        producer = Service.start(
            "producer-client",
            "producer-service",
            {**common, "PRODUCER_BIND_HOST": "127.0.0.1", "PRODUCER_PORT": str(pport)},
            pport,
            log_dir,
        )
        consumer = Service.start(
            "consumer-client",
            "consumer-service",
            {
                **common,
                "KAFKA_CONSUMER_GROUP": f"bench-{run_id}-client",
                "REDIS_URL": store.url,
                "CONSUMER_REDIS_PREFIX": prefix,
                "CONSUMER_PORT": str(cport),
            },
            cport,
            log_dir,
        )
        url = f"http://127.0.0.1:{pport}"
        try:
            producer.wait_ready()
            consumer.wait_ready()
            with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
                progress(f"client, in memory: {events:,} events to stored")
                out["memory"] = _to_stored(url, store, prefix, events)
                progress(f"client, spooled from {SPOOL_THREADS} threads: {events:,} events")
                out["spool"] = _to_stored(
                    url, store, prefix, events, spool=f"{tmp}/t.spool", threads=SPOOL_THREADS
                )
                progress(f"client, spooled track() from 1 thread: {spool_track_events:,} calls")
                out["spool_one_thread"] = _to_stored(
                    url, store, prefix, spool_track_events, spool=f"{tmp}/one.spool"
                )
                progress(f"client, spooled with sync=normal, 1 thread: {events:,} events")
                out["spool_normal"] = _to_stored(
                    url, store, prefix, events, spool=f"{tmp}/normal.spool", sync="normal"
                )
        finally:
            stop_all([producer, consumer])
    finally:
        delete_topics(bootstrap, [wrk_topic, topic, f"{topic}.dlq"])
        store.delete_prefix(prefix)
    return out

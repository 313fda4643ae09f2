"""Intake figures of `make bench`: `producer-service` under wrk, and its same-run baselines.

* `POST /events/generate` at 1, 16 and 64 connections (201 = acked by Kafka, acks=all),
  beside the floor (bench/floor.py: an empty Flask view under the producer's own gunicorn
  settings) and bare confluent-kafka keeping as many records in flight
  (baselines.produce_in_flight). For both services the CPU time of the whole process tree
  (master and workers, every thread, from /proc) is divided by the requests answered 201;
* `POST /events/batch` at each batch size, beside Kafka's ProducerPerformance (300-byte
  records, acks=all, idempotent, lz4) and a bare confluent-kafka produce loop;
* with payload encryption on (PAYLOAD_ENCRYPTION_KEYS, data keys in the bench Redis):
  `/events/generate` at the highest concurrency and `/events/batch` of 100, each beside
  the same run's figure without encryption.
* `POST /v1/batch` (the tracking API) at TRACKING_BATCH messages per request, in the same
  run and against the same process as `/events/batch` at that size.

Every answer that is not a 201 is counted as an error (bench/wrk/report.lua).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import baselines
from bench.common import (
    BIN,
    ROOT,
    BenchRedis,
    Service,
    cpu_seconds,
    create_topics,
    delete_topics,
    encryption_env,
    free_port,
    last_json_line,
    progress,
)

WRK_DIR = ROOT / "bench" / "wrk"
# Messages per /v1/batch request: about what Segment's SDKs send (upload_size 100).
TRACKING_BATCH = 100


def wrk(
    port: int, script: str, connections: int, seconds: float, batch: int | None = None
) -> dict[str, Any]:
    env = dict(os.environ)
    if batch is not None:
        env["BATCH"] = str(batch)
    cmd = [
        "wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(WRK_DIR / script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    raw = last_json_line(done.stdout, "BENCH_JSON")
    duration = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["non_201"]
    return {
        "command": ("" if batch is None else f"BATCH={batch} ") + " ".join(cmd),
        "connections": connections,
        "seconds": round(duration, 2),
        "requests": raw["requests"],
        "non_201": raw["non_201"],
        "socket_errors": raw["socket_errors"],
        "timeouts": raw["timeouts"],
        "acked_requests_per_second": round(ok / duration, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


def wrk_with_cpu(
    service: Service, script: str, connections: int, seconds: float, batch: int | None = None
) -> dict[str, Any]:
    """`wrk`, plus the CPU the service's processes spent meanwhile, per request answered 201."""
    assert service.port is not None
    pids = service.pids()
    before = cpu_seconds(pids)
    result = wrk(service.port, script, connections, seconds, batch)
    spent = cpu_seconds(pids) - before
    acked = result["requests"] - result["non_201"]
    result["service_cpu_seconds"] = round(spent, 3)
    result["cpu_us_per_acked"] = round(spent / acked * 1e6, 1) if acked else None
    return result


def tracking_row(service: Service, size: int, connections: int, seconds: float) -> dict[str, Any]:
    """wrk on POST /v1/batch with `size` track messages per request (bench/wrk/tracking.lua)."""
    progress(
        f"POST /v1/batch, {size} messages per request, {connections} connections, {seconds:g} s"
    )
    result = wrk_with_cpu(service, "tracking.lua", connections, seconds, size)
    result["batch"] = size
    result["events_per_second"] = round(result["acked_requests_per_second"] * size)
    return result


def floor(
    concurrencies: Sequence[int], seconds: float, log_dir: Path | None
) -> list[dict[str, Any]]:
    """wrk against bench/floor.py at each concurrency."""
    port = free_port()
    service = Service.start(
        "intake-floor",
        [str(BIN / "python"), "-m", "bench.floor"],
        {"PRODUCER_BIND_HOST": "127.0.0.1", "PRODUCER_PORT": str(port)},
        port,
        log_dir,
    )
    out = []
    try:
        service.wait_ready()
        for c in concurrencies:
            progress(f"floor: empty Flask view, {c} connection(s), {seconds:g} s")
            out.append(wrk_with_cpu(service, "generate.lua", c, seconds))
    finally:
        service.stop()
    return out


ENCRYPTED_BATCH = 100


def encrypted(
    bootstrap: str,
    run_id: str,
    store: BenchRedis,
    *,
    seconds: float,
    connections: int,
    batch_connections: int,
    log_dir: Path | None,
) -> dict[str, Any]:
    """`producer-service` with payload encryption on: `/events/generate` at `connections`
    and `/events/batch` of ENCRYPTED_BATCH, as `run` measures them. wrk's 1,000 users get
    their data keys on first use, then from each worker's cache."""
    topic = f"bench-{run_id}-intake-enc"
    prefix = f"bench:{run_id}:enc"
    create_topics(bootstrap, [topic])
    port = free_port()
    service = Service.start(
        "producer-service-encrypted",
        "producer-service",
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "PRODUCER_BIND_HOST": "127.0.0.1",
            "PRODUCER_PORT": str(port),
            "REDIS_URL": store.url,
            **encryption_env(prefix),
        },
        port,
        log_dir,
    )
    try:
        service.wait_ready()
        progress(f"encrypted: POST /events/generate, {connections} connections, {seconds:g} s")
        single = wrk_with_cpu(service, "generate.lua", connections, seconds)
        progress(f"encrypted: POST /events/batch, {ENCRYPTED_BATCH} events per request")
        batch = wrk_with_cpu(service, "batch.lua", batch_connections, seconds, ENCRYPTED_BATCH)
        batch["batch"] = ENCRYPTED_BATCH
        batch["events_per_second"] = round(batch["acked_requests_per_second"] * ENCRYPTED_BATCH)
    finally:
        service.stop()
        store.delete_prefix(prefix)
        delete_topics(bootstrap, [topic])
    return {"single": single, "batch": batch}


def run(
    bootstrap: str,
    run_id: str,
    *,
    seconds: float,
    concurrencies: Sequence[int],
    batch_sizes: Sequence[int],
    batch_connections: int,
    produce_events: int,
    log_dir: Path | None,
    store: BenchRedis | None = None,
) -> dict[str, Any]:
    """The intake figures; with `store`, those with payload encryption on too."""
    topic = f"bench-{run_id}-intake"
    base_topic = f"bench-{run_id}-intake-base"
    create_topics(bootstrap, [topic, base_topic])
    port = free_port()
    service = Service.start(
        "producer-service",
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
    single: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    try:
        service.wait_ready()
        for c in concurrencies:
            progress(f"POST /events/generate, {c} connection(s), {seconds:g} s")
            single.append(wrk_with_cpu(service, "generate.lua", c, seconds))
        for size in batch_sizes:
            progress(
                f"POST /events/batch, {size} events per request, "
                f"{batch_connections} connections, {seconds:g} s"
            )
            result = wrk_with_cpu(service, "batch.lua", batch_connections, seconds, size)
            result["batch"] = size
            result["events_per_second"] = round(result["acked_requests_per_second"] * size)
            batch.append(result)
        tracking = tracking_row(service, TRACKING_BATCH, batch_connections, seconds)
    finally:
        service.stop()

    encrypted_rows = None
    if store is not None:
        encrypted_rows = encrypted(
            bootstrap,
            run_id,
            store,
            seconds=seconds,
            connections=max(concurrencies),
            batch_connections=batch_connections,
            log_dir=log_dir,
        )
    floor_rows = floor(concurrencies, seconds, log_dir)
    try:
        in_flight = []
        for c in concurrencies:
            progress(f"baseline: bare confluent-kafka, {c} record(s) in flight, {seconds:g} s")
            in_flight.append(baselines.produce_in_flight(bootstrap, base_topic, c, seconds))
        progress(f"baseline: bare confluent-kafka produce loop, {produce_events:,} records")
        bare = baselines.produce_throughput(bootstrap, base_topic, produce_events)
        progress(f"baseline: Kafka ProducerPerformance, {produce_events:,} records of 300 bytes")
        perf = baselines.producer_performance(bootstrap, base_topic, produce_events)
    finally:
        delete_topics(bootstrap, [topic, base_topic])
    return {
        "single": single,
        "floor": floor_rows,
        "batch": batch,
        "tracking": tracking,
        "baseline_in_flight": in_flight,
        "baseline_produce": bare,
        "producer_performance": perf,
        "encrypted": encrypted_rows,
    }

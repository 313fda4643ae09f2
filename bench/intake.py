"""Intake figures of `make bench`: `producer-service` under wrk, and its same-run baselines.

* `POST /events/generate` at 1, 16 and 64 connections (201 = acked by Kafka, acks=all),
  beside bare confluent-kafka keeping as many records in flight (baselines.produce_in_flight);
* `POST /events/batch` at each batch size, beside Kafka's ProducerPerformance (300-byte
  records, acks=all, idempotent, lz4) and a bare confluent-kafka produce loop.

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
    ROOT,
    Service,
    create_topics,
    delete_topics,
    free_port,
    last_json_line,
    progress,
)

WRK_DIR = ROOT / "bench" / "wrk"


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
) -> dict[str, Any]:
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
            single.append(wrk(port, "generate.lua", c, seconds))
        for size in batch_sizes:
            progress(
                f"POST /events/batch, {size} events per request, "
                f"{batch_connections} connections, {seconds:g} s"
            )
            result = wrk(port, "batch.lua", batch_connections, seconds, size)
            result["batch"] = size
            result["events_per_second"] = round(result["acked_requests_per_second"] * size)
            batch.append(result)
    finally:
        service.stop()

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
        "batch": batch,
        "baseline_in_flight": in_flight,
        "baseline_produce": bare,
        "producer_performance": perf,
    }

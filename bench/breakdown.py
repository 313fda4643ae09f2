"""Where one single-event request's CPU goes, in microseconds, from a profile under load.

`producer-service` with one worker takes `POST /events/generate` from wrk at 64
connections. Meanwhile py-spy samples the worker's Python threads (busy samples only),
and /proc gives the CPU of each of its threads. librdkafka's own threads (`rdk:*`) are
C, invisible to py-spy: their CPU is a part of its own. The rest of the worker's CPU is
split between the parts below by their share of the samples, and divided by the
requests answered 201.

One worker, so that every request profiled is one the profiled process served; the
defaults otherwise. py-spy slows what it samples a little; the parts are shares of what
was measured, not a second measurement.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    BIN,
    Service,
    cpu_seconds,
    create_topics,
    delete_topics,
    descendants,
    free_port,
    progress,
)
from bench.intake import wrk

# (part, substrings of a stack that put a sample in it): the first that matches wins.
PARTS: Sequence[tuple[str, Sequence[str]]] = (
    ("metrics", ("producer_service/metrics.py", "prometheus_client")),
    ("logging", ("logging/__init__.py", "shared/logs.py")),
    (
        "delivery hand-off",
        (
            "producer_service/delivery.py",
            "gevent/event",
            "gevent/timeout",
            "Timeout.",
        ),
    ),
    ("produce", ("producer_service/publisher.py",)),
    (
        "enrichment and encoding",
        ("enrich (", "record_json (", "new_event_id (", "utc_timestamp (", "compact_json ("),
    ),
    (
        "body and validation",
        ("SingleEventFastPath._accept", "parse_json (", "json_problem (", "load_fast ("),
    ),
    (
        "response",
        (
            "Response.send_headers",
            "Response.write",
            "Response.close",
            "Response.start_response",
            "Response.process_headers",
            "Response.default_headers",
        ),
    ),
    ("Flask (other routes, refusals)", ("Flask.wsgi_app", "werkzeug/")),
    ("the route's own glue (fast path, timing)", ("producer_service/fast_path.py", "_timed")),
)
FRAMEWORK = "framework: gunicorn, gevent, Flask.__call__ (parse, environ, hub)"


def classify(raw_profile: str) -> dict[str, int]:
    """Samples per part, from py-spy's raw output (`frame;frame;... count` per line)."""
    counts: dict[str, int] = {name: 0 for name, _ in PARTS}
    counts[FRAMEWORK] = 0
    for line in raw_profile.splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        for name, needles in PARTS:
            if any(needle in stack for needle in needles):
                counts[name] += int(number)
                break
        else:
            counts[FRAMEWORK] += int(number)
    return counts


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of process `pid` (threads of one name summed)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + cpu_seconds_of_task(task)
    return out


def cpu_seconds_of_task(task: Path) -> float:
    try:
        stat = (task / "stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(bootstrap: str, topic: str, seconds: float, log_dir: Path | None) -> dict[str, Any] | None:
    """The breakdown, or None when py-spy is not installed (it is a dev dependency)."""
    py_spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if py_spy is None:
        progress("breakdown: py-spy not found; skipped")
        return None
    create_topics(bootstrap, [topic])
    try:
        return _profiled(py_spy, bootstrap, topic, seconds, log_dir)
    finally:
        delete_topics(bootstrap, [topic])


def _profiled(
    py_spy: str, bootstrap: str, topic: str, seconds: float, log_dir: Path | None
) -> dict[str, Any] | None:
    port = free_port()
    service = Service.start(
        "producer-profiled",
        "producer-service",
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "PRODUCER_BIND_HOST": "127.0.0.1",
            "PRODUCER_PORT": str(port),
            "PRODUCER_WORKERS": "1",
        },
        port,
        log_dir,
    )
    try:
        service.wait_ready()
        (worker,) = descendants(service.proc.pid)
        wrk(port, "generate.lua", 64, 2)  # warm up
        progress(f"breakdown: one worker at 64 connections under py-spy, {seconds:g} s")
        with tempfile.NamedTemporaryFile(suffix=".txt") as out:
            before = thread_cpu(worker)
            all_before = cpu_seconds([worker])
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(worker), "--duration", str(max(1, round(seconds))),
                 "--rate", "200", "--format", "raw", "--nonblocking", "--output", out.name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(0.3)
            result = wrk(port, "generate.lua", 64, seconds)
            spy.wait(timeout=60)
            spent = cpu_seconds([worker]) - all_before
            after = thread_cpu(worker)
            profile = Path(out.name).read_text()
    finally:
        service.stop()
    acked = result["requests"] - result["non_201"]
    if not acked or not profile:
        return None
    native = sum(after[name] - before.get(name, 0.0) for name in after if name.startswith("rdk:"))
    samples = classify(profile)
    total = sum(samples.values()) or 1
    python_us = (spent - native) / acked * 1e6
    parts = {name: round(python_us * count / total, 1) for name, count in samples.items()}
    parts["librdkafka's threads (batching, I/O, acks)"] = round(native / acked * 1e6, 1)
    return {
        "command": result["command"],
        "acked_requests_per_second": result["acked_requests_per_second"],
        "cpu_us_per_acked": round(spent / acked * 1e6, 1),
        "samples": total,
        "parts_us": parts,
    }


def markdown(b: dict[str, Any], started_at: str) -> str:
    """The breakdown as the table docs/performance.md shows."""
    lines = [
        f"Measured by `make bench` at {started_at}: one worker at 64 connections, "
        f"{b['acked_requests_per_second']:,.0f} acked/s, {b['cpu_us_per_acked']:.1f} µs of "
        f"worker CPU per acked request, {b['samples']:,} py-spy samples (bench/breakdown.py).",
        "",
        "| part | µs per request | share |",
        "| --- | ---: | ---: |",
    ]
    total = sum(b["parts_us"].values()) or 1
    for name, us in sorted(b["parts_us"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {us:.1f} | {us / total:.0%} |")
    return "\n".join(lines)

"""`make bench` in smoke mode: tiny sizes against the suite's Kafka and Redis, so the
harness is exercised on every `make test` and cannot rot unnoticed. The figures are
meaningless at these sizes; what is checked is that every one of them is there, that the
run's own topics and keys are gone afterwards, and that docs/benchmarks.md was left alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import assert_run_left_nothing

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

PROCESS_ROLES = {
    "producer master (gunicorn)",
    "producer worker 1",
    "producer worker 2",
    "consumer worker",
    "consumer API master (gunicorn)",
    "consumer API worker 1",
    "consumer API worker 2",
}


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.timeout(300)
def test_smoke_run_reports_every_figure(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    bench_doc_before = (ROOT / "docs" / "benchmarks.md").read_text()
    done = subprocess.run(
        [sys.executable, "-m", "bench.report", "--smoke", "--bootstrap", kafka_bootstrap,
         "--redis-url", redis_url, "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    assert len(list(tmp_path.glob("2*.json"))) == 1

    intake = results["intake"]
    assert [s["connections"] for s in intake["single"]] == [1, 16, 64]
    for single, base in zip(intake["single"], intake["baseline_in_flight"], strict=True):
        assert positive(single["acked_requests_per_second"]), single
        assert positive(single["p50_ms"]) and positive(single["p99_ms"]), single
        assert single["non_201"] == 0, single
        assert positive(base["acked_per_second"]) and positive(base["p99_ms"]), base
    # The floor at each concurrency, and CPU per acked request for both services.
    assert [f["connections"] for f in intake["floor"]] == [1, 16, 64]
    for run in intake["single"] + intake["floor"] + intake["batch"]:
        assert positive(run["cpu_us_per_acked"]), run
    parts = results["breakdown"]["parts_us"]
    assert positive(results["breakdown"]["cpu_us_per_acked"]) and sum(parts.values()) > 0
    assert [b["batch"] for b in intake["batch"]] == [100, 1000]
    tracking = intake["tracking"]
    assert positive(tracking["events_per_second"]) and tracking["non_201"] == 0, tracking
    assert all(positive(b["events_per_second"]) and b["non_201"] == 0 for b in intake["batch"])
    assert positive(intake["baseline_produce"]["events_per_second"])
    assert positive(intake["producer_performance"]["events_per_second"])
    # With payload encryption on, beside the same run's figures without it.
    encrypted = intake["encrypted"]
    assert encrypted["single"]["connections"] == 64 and encrypted["batch"]["batch"] == 100
    for run in encrypted.values():
        assert run["non_201"] == 0 and positive(run["cpu_us_per_acked"]), run

    consumer = results["consumer"]
    assert [w["replicas"] for w in consumer["workers"]] == [1, 2]
    for worker in consumer["workers"]:
        assert positive(worker["events_per_second"]), worker
        # Exactly the topic's events stored, and exactly its 5% copies skipped.
        assert worker["counts_correct"], worker
    assert consumer["duplicates"] == consumer["topic_records"] // 20
    for baseline in ("consumer_performance", "baseline_consume", "redis_store_loop"):
        assert positive(consumer[baseline]["events_per_second"]), baseline
    sealed = consumer["encrypted"]
    assert positive(sealed["events_per_second"]) and sealed["counts_correct"], sealed

    e2e = results["e2e"]
    assert e2e["acked"] > 0 and e2e["not_seen"] == 0 and e2e["read_api_sample_ok"], e2e
    assert e2e["p50_ms"] is not None and positive(e2e["p99_ms"]), e2e
    assert positive(results["e2e_baseline"]["p99_ms"]), results["e2e_baseline"]

    memory = results["memory"]
    assert set(memory["processes"]) == PROCESS_ROLES
    for name, proc in memory["processes"].items():
        assert positive(proc["first_bytes"]) and positive(proc["last_bytes"]), name
    assert len(memory["samples"]) >= 2
    assert isinstance(memory["redis"]["bytes_per_stored_event"], int)
    assert positive(memory["stored_event_json_bytes"])

    client = results["client"]
    assert positive(client["baseline_wrk"]["events_per_second"])
    for run in ("memory", "spool", "spool_one_thread", "spool_normal"):
        r = client[run]
        assert r["all_acked"] and r["sent"] == r["events"], (run, r)
        assert positive(r["track_us"]) and positive(r["events_per_second_stored"]), (run, r)

    # The table: every figure there, every baseline with its ratio.
    rows = results["rows"]
    assert len(rows) == 12 + 6 + 2 + 1 + 4 + 6 + 1 + 2 + len(PROCESS_ROLES) + 1 + 6
    for row in rows:
        assert row["figure"] or row["baseline"], row
        if row["baseline"] and not row["baseline"].startswith("its first sample"):
            assert row["ratio"] is not None, row
    assert "POST /events/generate, 64 conn" in done.stdout
    assert "POST /events/generate, 64 conn, payloads encrypted" in done.stdout
    assert "consumer, 1 replica, payloads encrypted" in done.stdout
    assert "Redis bytes per stored event" in done.stdout
    assert "client track(), in memory" in done.stdout
    assert results["problems"] == []

    assert (ROOT / "docs" / "benchmarks.md").read_text() == bench_doc_before
    assert_run_left_nothing(results, kafka_bootstrap, redis_url)

"""`make bench-cluster` in smoke mode (`bench.report --smoke --only cluster`): tiny sizes,
so the cluster part cannot rot unnoticed. Figures mean nothing at this size; checked are
that every variant ran with exactly the topic's stored and duplicate counts, that the
table has a row per variant, and that the run left no topic or key behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import assert_run_left_nothing

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

VARIANTS = [
    "single node",
    "3 masters x1",
    "3 masters x2",
    "3 masters, WAIT 1",
    "1 partition",
    "one shard x1",
    "one shard x2",
]


@pytest.mark.timeout(240)
def test_cluster_smoke_run_reports_every_variant(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are needed for a local cluster")
    bench_doc_before = (ROOT / "docs" / "benchmarks.md").read_text()
    done = subprocess.run(
        [sys.executable, "-m", "bench.report", "--smoke", "--only", "cluster",
         "--bootstrap", kafka_bootstrap, "--redis-url", redis_url,
         "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    variants = results["cluster"]["variants"]
    assert [v["variant"] for v in variants] == VARIANTS
    for v in variants:
        assert v["counts_correct"] and v["events_per_second"] > 0, v
        if v["variant"] != "single node":
            assert v["masters"] == (1 if v["variant"].startswith("one shard") else 3), v
            assert len(v["master_busy"]) == v["masters"], v
    assert results["problems"] == []
    assert [r["what"] for r in results["rows"] if r["what"].startswith("consumer on")] == [
        f"consumer on {v}" + ("" if "x" in v else ", x1") for v in VARIANTS
    ]

    assert (ROOT / "docs" / "benchmarks.md").read_text() == bench_doc_before
    assert_run_left_nothing(results, kafka_bootstrap, redis_url)

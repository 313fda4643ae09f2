"""Runs every benchmark of `make bench` and prints one table of ratios.

    .venv/bin/python bench/report.py [--events 100000] [--duration 10]

Each pipeline figure is divided by a baseline measured in this same run, so the ratios
compare across machines where the absolute figures do not:

* producer, HTTP (wrk against `producer-service` under gunicorn, defaults) vs bare
  confluent-kafka produce from one Python process (bench/baselines.py produce);
* consumer worker, pre-filled topic to everything stored in Redis
  (bench/consumer_throughput.py) vs a bare confluent-kafka consumer that stores nothing
  (bench/baselines.py consume).

Expects Kafka and Redis running (bench/run.sh starts them). Results also go to
bench/results/<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
sys.path.insert(0, str(ROOT))

from confluent_kafka.admin import AdminClient  # noqa: E402

from infra.topics import ensure_topics  # noqa: E402

PORT = 18000


def last_json(output: str) -> dict[str, Any]:
    """The last JSON object a script printed (one line, or indented over several)."""
    start = output.rfind("\n{")
    text = output[start + 1 :] if start >= 0 else output[output.find("{") :]
    value: dict[str, Any] = json.loads(text)
    return value


def run_json(*args: str) -> dict[str, Any]:
    out = subprocess.run([PY, *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return last_json(out)


def wrk(script: str, connections: int, duration: int, env: dict[str, str]) -> dict[str, Any]:
    cmd = [
        "wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency",
        "-s", str(ROOT / "bench" / "wrk" / script), f"http://127.0.0.1:{PORT}",
    ]  # fmt: skip
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, **env}
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    return {
        "command": " ".join(cmd),
        "requests": total,
        "requests_per_second": rps,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "p50": latency.get("50"),
        "p99": latency.get("99"),
    }


def producer_http(duration: int, batch: int) -> dict[str, Any]:
    topic = f"bench-http-{uuid.uuid4().hex[:8]}"
    ensure_topics("127.0.0.1:9092", [topic], 6)
    env = {
        **os.environ,
        "KAFKA_TOPIC": topic,
        "PRODUCER_BIND_HOST": "127.0.0.1",
        "PRODUCER_PORT": str(PORT),
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [str(BIN / "producer-service")], env=env, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/ready", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("producer-service did not become ready") from None
                time.sleep(0.2)
        single = wrk("generate.lua", 64, duration, {})
        batched = wrk("batch.lua", 8, duration, {"BATCH": str(batch)})
        batched["batch"] = batch
        return {"single": single, "batch": batched}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        AdminClient({"bootstrap.servers": "127.0.0.1:9092"}).delete_topics([topic])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--batch", type=int, default=500, help="events per /events/batch")
    args = parser.parse_args()

    print("[bench] baseline: bare confluent-kafka produce", file=sys.stderr)
    base_produce = run_json("bench/baselines.py", "produce", "--events", str(args.events))
    print("[bench] producer-service under wrk", file=sys.stderr)
    http = producer_http(args.duration, args.batch)
    print("[bench] baseline: bare confluent-kafka consume", file=sys.stderr)
    base_consume = run_json("bench/baselines.py", "consume", "--events", str(args.events))
    print("[bench] consumer worker, pre-filled topic to all stored", file=sys.stderr)
    worker = run_json("bench/consumer_throughput.py", "--events", str(args.events))

    single_eps = http["single"]["requests_per_second"]
    batch_eps = http["batch"]["requests_per_second"] * args.batch
    rows = [
        ("bare produce (baseline)", base_produce["events_per_second"], 1.0),
        ("POST /events/generate", single_eps, single_eps / base_produce["events_per_second"]),
        (
            f"POST /events/batch ({args.batch}/request)",
            batch_eps,
            batch_eps / base_produce["events_per_second"],
        ),
        ("bare consume (baseline)", base_consume["events_per_second"], 1.0),
        (
            "consumer worker to Redis",
            worker["events_per_second"],
            worker["events_per_second"] / base_consume["events_per_second"],
        ),
    ]
    print(f"\n{'what':<36}{'events/s':>12}{'ratio':>9}")
    for name, eps, ratio in rows:
        print(f"{name:<36}{eps:>12,.0f}{ratio:>9.3f}")
    for kind in ("single", "batch"):
        r = http[kind]
        print(
            f"wrk {kind}: p50 {r['p50']}, p99 {r['p99']}, {r['requests']} requests, "
            f"non-2xx {r['non_2xx']}"
        )
    print(f"Redis bytes per stored event: {worker['redis_bytes_per_event']}")

    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"{stamp}.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "baseline_produce": base_produce,
                "producer_http": http,
                "baseline_consume": base_consume,
                "consumer_worker": worker,
            },
            indent=2,
        )
    )
    failed = http["single"]["non_2xx"] or http["batch"]["non_2xx"]
    if failed:
        print("[bench] some HTTP answers were not 2xx: figures are not valid", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

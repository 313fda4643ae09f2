"""`make bench`: every speed and memory figure, each beside a baseline measured in the same
run, printed as one table.

    .venv/bin/python -m bench.report                  # the default run, 10-15 minutes here
    .venv/bin/python -m bench.report --smoke          # tiny sizes, under a minute (make test)
    .venv/bin/python -m bench.report --only consumer --consumer-events 1000000
    .venv/bin/python -m bench.report --docs-from bench/results/latest.json

Parts, in order (`--only` picks some):
  intake    producer-service under wrk: /events/generate at 1, 16, 64 connections and
            /events/batch at 100 and 1,000 per request (bench/intake.py)
  consumer  consumer-service processes, 1 and 2 replicas, draining a pre-filled topic with
            5% duplicates into Redis (bench/consumer_throughput.py)
  e2e       201 to readable at a steady rate (bench/e2e.py)
  memory    process RSS and Redis bytes per event over M events (bench/memory.py)
  client    the Python client (client/): track() cost in memory and spooled, and events/s
            from one client process to acknowledged events (no consumer running, as for
            wrk on /events/batch beside it), then to stored events (bench/client.py)
  cluster   not in the default run (`make bench-cluster`): the consumer into a private
            local Redis Cluster, 3 masters and one shard, with WAIT 1 (bench/cluster.py)

Kafka must answer (bench/run.sh starts it). The consumer side stores into a private
redis-server (AOF, appendfsync always) unless --redis-url names one. Every topic, group
and key prefix is this run's own, and is deleted at the end. Results go to
<results-dir>/<UTC time>.json and latest.json; a full run (not --smoke, not --only)
also rewrites docs/benchmarks.md from that file (the README links it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka

from bench import (
    baselines,
    breakdown,
    client,
    cluster,
    consumer_throughput,
    e2e,
    intake,
    memory,
)
from bench.common import (
    ROOT,
    BenchRedis,
    Service,
    create_topics,
    delete_topics,
    free_port,
    pipeline_counts,
    progress,
    stop_all,
    wait_until,
)
from infra.topics import wait_for_broker

PARTS = ("intake", "consumer", "e2e", "memory", "client")
OPTIONAL_PARTS = ("cluster",)  # several minutes: only when named with --only
BENCH_DOC = ROOT / "docs" / "benchmarks.md"

# (default, smoke) per size option
SIZES: dict[str, tuple[Any, Any]] = {
    "duration": (10.0, 1.0),
    "concurrency": ("1,16,64", "1,16,64"),
    "batch_sizes": ("100,1000", "100,1000"),
    "batch_connections": (8, 4),
    "produce_events": (300_000, 3_000),
    "consumer_events": (300_000, 3_000),
    "replicas": ("1,2", "1,2"),
    "duplicates": (0.05, 0.05),
    "e2e_rate": (1000.0, 200.0),
    "e2e_seconds": (30.0, 2.0),
    "e2e_warmup": (3.0, 0.5),
    "memory_events": (1_000_000, 2_000),
    "cluster_events": (100_000, 1_000),
    "client_events": (200_000, 2_000),
    "client_spool_track_events": (2_000, 100),
}


# -- running ---------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is missing: sudo apt-get install -y wrk")
    progress("installing wrk with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)


def pipeline_phase(
    args: argparse.Namespace, run_id: str, store: BenchRedis, log_dir: Path | None
) -> dict[str, Any]:
    """End to end and memory share one producer and one consumer replica (read API on)."""
    bootstrap = args.bootstrap
    topic = f"bench-{run_id}-pipeline"
    rt_topic = f"bench-{run_id}-roundtrip"
    prefix = f"bench:{run_id}:pipeline"
    out: dict[str, Any] = {}
    create_topics(bootstrap, [topic, f"{topic}.dlq", rt_topic])
    try:
        if "e2e" in args.parts:
            progress(
                f"baseline: bare confluent-kafka produce -> consume round trip at "
                f"{args.e2e_rate:g}/s for {args.e2e_seconds:g} s"
            )
            out["e2e_baseline"] = baselines.round_trip(
                bootstrap, rt_topic, args.e2e_rate, args.e2e_seconds, args.e2e_warmup
            )
        used_before = store.used_memory()
        pport, cport = free_port(), free_port()
        common = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic}
        producer = Service.start(
            "producer",
            "producer-service",
            {**common, "PRODUCER_BIND_HOST": "127.0.0.1", "PRODUCER_PORT": str(pport)},
            pport,
            log_dir,
        )
        consumer = Service.start(
            "consumer",
            "consumer-service",
            {
                **common,
                "KAFKA_CONSUMER_GROUP": f"bench-{run_id}-pipeline",
                "REDIS_URL": store.url,
                "CONSUMER_REDIS_PREFIX": prefix,
                "CONSUMER_PORT": str(cport),
            },
            cport,
            log_dir,
        )
        try:
            progress("starting producer-service and consumer-service (read API on)")
            producer.wait_ready()
            consumer.wait_ready()

            def counts() -> int:
                return sum(pipeline_counts(store.client, prefix))

            if "e2e" in args.parts:
                progress("end to end: producer 201 -> readable through the read API")
                before = counts()
                out["e2e"] = e2e.run(
                    pport,
                    cport,
                    store.url,
                    prefix,
                    lambda n: wait_until(lambda: counts() >= before + n, 60),
                    rate=args.e2e_rate,
                    seconds=args.e2e_seconds,
                    warmup=args.e2e_warmup,
                    source=args.e2e_watch,
                )
            if "memory" in args.parts:
                progress(
                    f"memory: {args.memory_events:,} events through both services, "
                    "RSS at every tenth"
                )
                mem = memory.run(
                    producer,
                    consumer,
                    store,
                    counts,
                    lambda: memory.stored_count(cport),
                    used_before,
                    events=args.memory_events,
                )
                mem["stored_event_json_bytes"] = memory.stored_body_bytes(cport)
                out["memory"] = mem
        finally:
            stop_all([producer, consumer])
    finally:
        delete_topics(bootstrap, [topic, f"{topic}.dlq", rt_topic])
        store.delete_prefix(prefix)
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    kafka_jars = sorted((baselines.kafka_libs()).glob("kafka-clients-*.jar"))
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_bytes": mem_kib * 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka_tools": kafka_jars[-1].stem.removeprefix("kafka-clients-") if kafka_jars else None,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks, not figures")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"parts, of {','.join(PARTS + OPTIONAL_PARTS)}"
    )
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10)")
    parser.add_argument("--concurrency", help="connections of /events/generate (1,16,64)")
    parser.add_argument("--batch-sizes", help="events per /events/batch request (100,1000)")
    parser.add_argument("--batch-connections", type=int, help="wrk connections for batches (8)")
    parser.add_argument("--produce-events", type=int, help="records of the produce baselines")
    parser.add_argument("--consumer-events", type=int, help="records in the consumer's topic")
    parser.add_argument("--replicas", help="consumer replica counts (1,2)")
    parser.add_argument("--duplicates", type=float, help="share of duplicates (0.05)")
    parser.add_argument("--e2e-rate", type=float, help="events/s of the end to end run (1000)")
    parser.add_argument("--e2e-seconds", type=float, help="measured seconds (30)")
    parser.add_argument("--e2e-warmup", type=float, help="seconds sent but not counted (3)")
    parser.add_argument("--e2e-watch", choices=["redis", "api"], default="redis")
    parser.add_argument("--memory-events", type=int, help="events of the memory run (1000000)")
    parser.add_argument("--cluster-events", type=int, help="records per cluster run (100000)")
    parser.add_argument("--client-events", type=int, help="events per client run (200000)")
    parser.add_argument(
        "--client-spool-track-events", type=int, help="one-thread spooled track() calls (2000)"
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--redis-url", help="use this Redis (default: a private one)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--service-logs", type=Path, help="keep the services' logs here")
    parser.add_argument(
        "--docs-from", type=Path, help="only rewrite docs/benchmarks.md from this file"
    )
    args = parser.parse_args(argv)
    for name, (default, smoke) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else default)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS + OPTIONAL_PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    args.replicas = [int(r) for r in str(args.replicas).split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.docs_from:
        write_bench_doc(json.loads(args.docs_from.read_text()), args.docs_from)
        return 0
    if not wait_for_broker(args.bootstrap, 10):
        raise SystemExit(f"no Kafka broker answers at {args.bootstrap} (bench/run.sh starts one)")
    if "intake" in args.parts:
        ensure_wrk()
    started = datetime.now(UTC)
    clock = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    log_dir = args.service_logs
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    sizes = {name: getattr(args, name) for name in SIZES}
    progress(f"run {run_id}: {', '.join(args.parts)}; sizes {json.dumps(sizes)}")
    results: dict[str, Any] = {
        "schema": 1,
        "run_id": run_id,
        "mode": "smoke" if args.smoke else "full",
        "parts": args.parts,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "sizes": sizes,
    }
    store = BenchRedis(args.redis_url)
    results["redis"] = {"private": store.private, "persistence": store.fsync_policy()}
    try:
        if "intake" in args.parts:
            results["intake"] = intake.run(
                args.bootstrap,
                run_id,
                seconds=args.duration,
                concurrencies=args.concurrency,
                batch_sizes=args.batch_sizes,
                batch_connections=args.batch_connections,
                produce_events=args.produce_events,
                log_dir=log_dir,
                store=store,
            )
        if "intake" in args.parts:
            results["breakdown"] = breakdown.run(
                args.bootstrap, f"bench-{run_id}-breakdown", args.duration, log_dir
            )
        if "consumer" in args.parts:
            results["consumer"] = consumer_throughput.run(
                args.bootstrap,
                run_id,
                store,
                events=args.consumer_events,
                duplicate_share=args.duplicates,
                replica_counts=args.replicas,
                log_dir=log_dir,
            )
        if "e2e" in args.parts or "memory" in args.parts:
            results.update(pipeline_phase(args, run_id, store, log_dir))
        if "client" in args.parts:
            results["client"] = client.run(
                args.bootstrap,
                run_id,
                store,
                events=args.client_events,
                spool_track_events=args.client_spool_track_events,
                seconds=args.duration,
                connections=args.batch_connections,
                log_dir=log_dir,
            )
        if "cluster" in args.parts:
            results["cluster"] = cluster.run(
                args.bootstrap,
                run_id,
                store,
                events=args.cluster_events,
                duplicate_share=args.duplicates,
                log_dir=log_dir,
            )
    finally:
        store.close()
    results["seconds"] = round(time.monotonic() - clock, 1)
    results["rows"] = rows(results)
    results["problems"] = problems(results)

    print(render_text(results))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(results, indent=2)
    path.write_text(text)
    (args.results_dir / "latest.json").write_text(text)
    progress(f"results: {path}")
    if not (args.smoke or args.no_docs or set(args.parts) != set(PARTS)):
        write_bench_doc(json.loads(path.read_text()), path)
    for problem in results["problems"]:
        print(f"[bench] NOT VALID: {problem}", file=sys.stderr)
    return 1 if results["problems"] else 0


# -- the table -------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _row(
    what: str,
    figure: str,
    baseline: str = "",
    ratio: float | None = None,
    goal: str = "",
    met: bool | None = None,
    value: float | None = None,
) -> dict[str, Any]:
    return {
        "what": what,
        "figure": figure,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
        "met": met,
    }


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The table, from a results file: what, figure, same-run baseline, ratio, goal, met."""
    out: list[dict[str, Any]] = []
    if "intake" in r:
        out += _intake_rows(r["intake"])
        out += _intake_encryption_rows(r["intake"])
    if "consumer" in r:
        out += _consumer_rows(r["consumer"])
        out += _consumer_encryption_rows(r["consumer"])
    if "e2e" in r:
        out += _e2e_rows(r["e2e"], r["e2e_baseline"])
    if "memory" in r:
        out += _memory_rows(r["memory"])
    if "cluster" in r:
        out += _cluster_rows(r["cluster"])
    if "client" in r:
        out += _client_rows(r["client"])
    return out


def _client_rows(c: dict[str, Any]) -> list[dict[str, Any]]:
    wrk = c["baseline_wrk"]
    wrk_eps = wrk["events_per_second"]
    base = f"wrk /events/batch, {client.BATCH}/request, {wrk['connections']} conn: {_n(wrk_eps)}/s"
    mem, spool, one, normal = c["memory"], c["spool"], c["spool_one_thread"], c["spool_normal"]
    acked = mem["events_per_second_acked"]
    return [
        _row(
            "client track(), in memory",
            f"{_n(mem['track_us'], 1)} us/call ({_n(mem['track_cpu_us'], 1)} us CPU)",
            goal="<= 10 us",
            met=mem["track_us"] <= 10,
            value=mem["track_us"],
        ),
        _row(
            "client track(), spooled, 1 thread",
            f"{_n(one['track_us'], 0)} us/call (an fsync each)",
            value=one["track_us"],
        ),
        _row(
            "one client process -> acked, in memory",
            f"{_n(acked)} ev/s",
            base,
            _ratio(acked, wrk_eps),
            ">= 0.5 x wrk",
            acked >= 0.5 * wrk_eps,
            acked,
        ),
        _row(
            "  -> stored (consumer into Redis)",
            f"{_n(mem['events_per_second_stored'])} ev/s",
            value=mem["events_per_second_stored"],
        ),
        _row(
            f"one client process -> acked, spooled, {spool['threads']} threads",
            f"{_n(spool['events_per_second_acked'])} ev/s "
            f"({_n(spool['events_per_second_stored'])} stored/s)",
            goal=">= 20,000/s",
            met=spool["events_per_second_acked"] >= 20_000,
            value=spool["events_per_second_acked"],
        ),
        _row(
            "  spooled, 1 thread, spool_sync=normal",
            f"{_n(normal['events_per_second_acked'])} ev/s ({_n(normal['track_us'], 1)} us/track)",
            value=normal["events_per_second_acked"],
        ),
    ]


# The single-event goals, against the floor measured in the same run (bench/floor.py).
FLOOR_CPU_GOAL = 1.4
FLOOR_RATE_GOAL = 0.5


def _intake_rows(i: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    floors = i.get("floor") or [None] * len(i["single"])
    for one, base, floor in zip(i["single"], i["baseline_in_flight"], floors, strict=True):
        c = one["connections"]
        top = c == 64
        eps = one["acked_requests_per_second"]
        floor_rps = None if floor is None else floor["acked_requests_per_second"]
        rate_ratio = _ratio(eps, floor_rps)
        out.append(
            _row(
                f"POST /events/generate, {c} conn",
                f"{_n(eps)} acked/s",
                f"floor (empty Flask view): {_n(floor_rps)} req/s",
                rate_ratio,
                f">= {FLOOR_RATE_GOAL} x floor" if top else "",
                rate_ratio >= FLOOR_RATE_GOAL if top and rate_ratio is not None else None,
                eps,
            )
        )
        out.append(
            _row(
                "",
                "",
                f"bare produce, {c} in flight: {_n(base['acked_per_second'])}/s",
                _ratio(eps, base["acked_per_second"]),
            )
        )
        cpu = one.get("cpu_us_per_acked")
        floor_cpu = None if floor is None else floor.get("cpu_us_per_acked")
        cpu_ratio = _ratio(cpu, floor_cpu)
        out.append(
            _row(
                f"  service CPU per acked event, {c} conn",
                f"{_n(cpu, 1)} us",
                f"floor: {_n(floor_cpu, 1)} us per request",
                cpu_ratio,
                f"<= {FLOOR_CPU_GOAL} x floor" if top else "",
                cpu_ratio <= FLOOR_CPU_GOAL if top and cpu_ratio is not None else None,
                cpu,
            )
        )
        out.append(
            _row(
                f"  latency, {c} conn",
                f"p50 {_n(one['p50_ms'], 1)}, p99 {_n(one['p99_ms'], 1)} ms",
                f"p50 {_n(base['p50_ms'], 1)}, p99 {_n(base['p99_ms'], 1)} ms",
                _ratio(one["p99_ms"], base["p99_ms"]),
                "p99 < 50 ms" if top else "",
                one["p99_ms"] < 50 if top else None,
                one["p99_ms"],
            )
        )
    perf = i["producer_performance"]["events_per_second"]
    bare = i["baseline_produce"]["events_per_second"]
    for b in i["batch"]:
        eps = b["events_per_second"]
        out.append(
            _row(
                f"POST /events/batch, {b['batch']}/request",
                f"{_n(eps)} ev/s",
                f"ProducerPerformance (300 B): {_n(perf)}/s",
                _ratio(eps, perf),
                ">= 60,000/s, >= 0.5",
                eps >= 60_000 and eps / perf >= 0.5,
                eps,
            )
        )
        out.append(
            _row(
                "",
                "",
                f"bare confluent-kafka produce: {_n(bare)}/s",
                _ratio(eps, bare),
            )
        )
        cpu = b.get("cpu_us_per_acked")
        if cpu is not None:
            out.append(
                _row(
                    "  service CPU per acked event",
                    f"{_n(cpu / b['batch'], 1)} us",
                    value=cpu / b["batch"],
                )
            )
    out.extend(_tracking_rows(i))
    bad = [s["non_201"] + s["socket_errors"] + s["timeouts"] for s in i["single"]]
    bad_batch = [
        b["non_201"] + b["socket_errors"] + b["timeouts"]
        for b in [*i["batch"], *([i["tracking"]] if "tracking" in i else [])]
    ]
    out.append(
        _row(
            "intake errors (non-201, socket)",
            f"{' / '.join(map(str, bad))}; batch {' / '.join(map(str, bad_batch))}",
            goal="0",
            met=not any(bad + bad_batch),
            value=sum(bad + bad_batch),
        )
    )
    return out


def _intake_encryption_rows(i: dict[str, Any]) -> list[dict[str, Any]]:
    """Payload encryption's cost on intake: each figure beside the same run's figure
    without it (the ratio of throughput, then of service CPU per acked event)."""
    enc = i.get("encrypted")
    if not enc:
        return []
    out = []
    single = enc["single"]
    c = single["connections"]
    plain = next((s for s in i["single"] if s["connections"] == c), None)
    batch = enc["batch"]
    size = batch["batch"]
    plain_batch = next((b for b in i["batch"] if b["batch"] == size), None)
    pairs = [
        (f"/events/generate, {c} conn", single, plain, "acked_requests_per_second", 1),
        (f"/events/batch, {size}/request", batch, plain_batch, "events_per_second", size),
    ]
    for what, on, off, rate, per in pairs:
        off_rate = None if off is None else off[rate]
        out.append(
            _row(
                f"POST {what}, payloads encrypted",
                f"{_n(on[rate])} ev/s",
                f"same run, not encrypted: {_n(off_rate)} ev/s",
                _ratio(on[rate], off_rate),
                value=on[rate],
            )
        )
        cpu = on.get("cpu_us_per_acked")
        off_cpu = None if off is None else off.get("cpu_us_per_acked")
        cpu_per = None if cpu is None else cpu / per
        off_per = None if off_cpu is None else off_cpu / per
        out.append(
            _row(
                "  service CPU per acked event, encrypted",
                f"{_n(cpu_per, 1)} us",
                f"not encrypted: {_n(off_per, 1)} us",
                _ratio(cpu_per, off_per),
                value=cpu_per,
            )
        )
    return out


def _consumer_encryption_rows(c: dict[str, Any]) -> list[dict[str, Any]]:
    """Payload encryption's cost on the consumer: one replica's rate beside the same
    run's without it."""
    enc = c.get("encrypted")
    if not enc:
        return []
    plain = next((w for w in c["workers"] if w["replicas"] == 1), None)
    off = None if plain is None else plain["events_per_second"]
    return [
        _row(
            "consumer, 1 replica, payloads encrypted",
            f"{_n(enc['events_per_second'])} ev/s",
            f"same run, not encrypted: {_n(off)} ev/s",
            _ratio(enc["events_per_second"], off),
            value=enc["events_per_second"],
        )
    ]


def _consumer_rows(c: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    cperf = c["consumer_performance"]["events_per_second"]
    bare = c["baseline_consume"]["events_per_second"]
    loop = c["redis_store_loop"]["events_per_second"]
    one = None
    for w in c["workers"]:
        n = w["replicas"]
        eps = w["events_per_second"]
        per = w["events_per_second_per_replica"]
        what = f"consumer, {n} replica{'s' if n > 1 else ''}"
        figure = f"{_n(eps)} ev/s" + (f" ({_n(per)}/replica)" if n > 1 else "")
        goal, met = ">= 40,000/s per replica", per >= 40_000
        out.append(
            _row(
                what,
                figure,
                f"ConsumerPerformance: {_n(cperf)}/s",
                _ratio(eps, cperf),
                goal,
                met,
                eps,
            )
        )
        out.append(_row("", "", f"bare confluent-kafka consume: {_n(bare)}/s", _ratio(eps, bare)))
        if n == 1:
            one = eps
            out.append(_row("", "", f"raw pipelined Redis store: {_n(loop)}/s", _ratio(eps, loop)))
        elif one:
            out.append(_row("", "", f"1 replica: {_n(one)}/s", _ratio(eps, one)))
    return out


def _e2e_rows(e: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
    rate = f"{e['rate']:,.0f}/s"
    # An overloaded machine starves the sender too: then say how far it kept its pace.
    late = e["sends_late_over_10ms"] / max(e["sent"], 1)
    pace = f" ({late:.0%} of sends >10 ms late)" if late > 0.01 else ""
    return [
        _row(
            f"end to end at {rate}, p50",
            f"{_n(e['p50_ms'], 1)} ms{pace}",
            f"Kafka produce->consume: {_n(base['p50_ms'], 1)} ms "
            f"(ack->consume {_n(base['ack_to_consumed_p50_ms'], 1)})",
            _ratio(e["p50_ms"], base["p50_ms"]),
            "< 10 ms",
            e["p50_ms"] is not None and e["p50_ms"] < 10,
            e["p50_ms"],
        ),
        _row(
            f"end to end at {rate}, p99",
            f"{_n(e['p99_ms'], 1)} ms",
            f"Kafka produce->consume: {_n(base['p99_ms'], 1)} ms "
            f"(ack->consume {_n(base['ack_to_consumed_p99_ms'], 1)})",
            _ratio(e["p99_ms"], base["p99_ms"]),
            "< 50 ms",
            e["p99_ms"] is not None and e["p99_ms"] < 50,
            e["p99_ms"],
        ),
    ]


def _memory_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    points = m["samples_at_processed"]
    span = f"{_n(points[0])} -> {_n(points[-1])} events" if points else "no samples"
    for name, p in m["processes"].items():
        first, last = p["first_bytes"], p["last_bytes"]
        change = p["max_change"]
        out.append(
            _row(
                f"RSS {name}",
                f"{_n((first or 0) / 2**20, 1)} -> {_n((last or 0) / 2**20, 1)} MiB"
                + ("" if change is None else f" (max {change:+.1%})"),
                f"its first sample, {span}",
                _ratio(last, first),
                "within +-10%",
                p["flat"],
                last,
            )
        )
    redis_info = m["redis"]
    body = m.get("stored_event_json_bytes")
    out.append(
        _row(
            "Redis bytes per stored event",
            f"{_n(redis_info['bytes_per_stored_event'])} B"
            + ("" if redis_info["private"] else " (shared Redis)"),
            f"stored event JSON: {_n(body)} B",
            _ratio(redis_info["bytes_per_stored_event"], body),
            value=redis_info["bytes_per_stored_event"],
        )
    )
    return out


def _cluster_rows(c: dict[str, Any]) -> list[dict[str, Any]]:
    by = {v["variant"]: v for v in c["variants"]}
    # Each variant beside the run it differs from by one thing.
    against = {
        "3 masters x1": "single node",
        "3 masters x2": "3 masters x1",
        "3 masters, WAIT 1": "3 masters x1",
        "1 partition": "3 masters x1",
        "one shard x1": "3 masters x1",
        "one shard x2": "one shard x1",
    }
    out = []
    for v in c["variants"]:
        eps, n = v["events_per_second"], v["replicas"]
        figure = f"{_n(eps)} ev/s" + (f" ({_n(v['events_per_second_per_replica'])}/replica)"
                                      if n > 1 else "")  # fmt: skip
        base = by.get(against.get(v["variant"], ""))
        out.append(
            _row(
                f"consumer on {v['variant']}" + ("" if "x" in v["variant"] else f", x{n}"),
                figure,
                "" if base is None else f"{base['variant']}: {_n(base['events_per_second'])}/s",
                None if base is None else _ratio(eps, base["events_per_second"]),
                value=eps,
            )
        )
        busy = v.get("master_busy") or {}
        if busy:
            top = max(busy.values())
            ceilings = [x for x in v["master_ceiling_events_per_second"].values() if x]
            out.append(
                _row(
                    "  busiest master",
                    f"{top:.0%} of a core",
                    f"CPU-bound ceiling {_n(min(ceilings) if ceilings else None)} ev/s",
                    value=top,
                )
            )
    return out


def problems(r: dict[str, Any]) -> list[str]:
    """Why some figures cannot be trusted (errors, lost or miscounted events)."""
    found = []
    encrypted = r.get("intake", {}).get("encrypted") or {}
    for s in (
        r.get("intake", {}).get("single", [])
        + r.get("intake", {}).get("batch", [])
        + list(encrypted.values())
    ):
        if s["non_201"] or s["socket_errors"] or s["timeouts"]:
            found.append(f"{s['command']}: {s['non_201']} non-201, {s['socket_errors']} socket "
                         f"errors, {s['timeouts']} timeouts")  # fmt: skip
    consumer = r.get("consumer", {})
    for w in consumer.get("workers", []) + (
        [consumer["encrypted"]] if consumer.get("encrypted") else []
    ):
        if not w["counts_correct"]:
            found.append(
                f"consumer x{w['replicas']}: stored {w['stored']} and skipped "
                f"{w['duplicates_skipped']}, expected {r['consumer']['unique_events']} and "
                f"{r['consumer']['duplicates']}"
            )
    for v in r.get("cluster", {}).get("variants", []):
        if not v["counts_correct"]:
            found.append(
                f"cluster {v['variant']}: stored {v['stored']} and skipped "
                f"{v['duplicates_skipped']}, expected {r['cluster']['unique_events']} and "
                f"{r['cluster']['duplicates']}"
            )
    if "e2e" in r:
        e = r["e2e"]
        if e["non_201"] or e["not_seen"] or not e["read_api_sample_ok"]:
            found.append(
                f"end to end: {e['non_201']} non-201, {e['not_seen']} acked events never seen, "
                f"read API sample {'ok' if e['read_api_sample_ok'] else 'FAILED'}"
            )
    for name, run in r.get("client", {}).items():
        if name != "baseline_wrk" and not run["all_acked"]:
            found.append(f"client {name}: not every event was acknowledged ({run['sent']} sent)")
    if "client" in r:
        w = r["client"]["baseline_wrk"]
        if w["non_201"] or w["socket_errors"] or w["timeouts"]:
            found.append(f"client baseline {w['command']}: {w['non_201']} non-201")
    if "memory" in r and r["memory"]["requests_failed"]:
        found.append(f"memory run: {r['memory']['requests_failed']} batch requests failed")
    return found


HEADINGS = ("what", "figure", "same-run baseline", "ratio", "goal", "met")


def _fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"


def _met(value: bool | None) -> str:
    return "" if value is None else ("met" if value else "MISSED")


def _header_lines(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    s = r["sizes"]
    return [
        f"{r['started_at']} ({r['mode']} run, {r['seconds']:.0f} s), {m['nproc']} CPUs "
        f"({m['cpu_model']}), {m['memory_bytes'] / 2**30:.1f} GiB, everything on this machine",
        f"sizes: wrk {s['duration']:g} s per run; produce baselines {s['produce_events']:,} "
        f"records; consumer topic {s['consumer_events']:,} records "
        f"({s['duplicates']:.0%} duplicates); end to end {s['e2e_rate']:g}/s for "
        f"{s['e2e_seconds']:g} s; memory {s['memory_events']:,} events",
        f"Redis: {'private' if r['redis']['private'] else 'shared'}, {r['redis']['persistence']}",
    ]


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        row["what"],
        row["figure"],
        row["baseline"],
        _fmt_ratio(row["ratio"]),
        row["goal"],
        _met(row["met"]),
    ]


def render_text(r: dict[str, Any]) -> str:
    table = [list(HEADINGS), *(_cells(row) for row in r["rows"])]
    widths = [max(len(line[i]) for line in table) + 2 for i in range(len(HEADINGS))]
    lines = ["", *_header_lines(r), ""]
    for n, line in enumerate(table):
        lines.append("".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("-" * (sum(widths) - 2))
    lines.append("ratio = figure / its same-run baseline; for latency and memory, lower is better")
    return "\n".join(lines)


def render_markdown(r: dict[str, Any], source: str) -> str:
    m, z = r["machine"], r["sizes"]
    when = datetime.fromisoformat(r["started_at"]).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"<!-- Written by `make bench` from {source}; edit bench/report.py, not this. -->",
        "# Benchmarks (`make bench`)",
        "",
        f"Run of {when}, {r['seconds'] / 60:.0f} minutes, on {m['nproc']} vCPUs "
        f"({m['cpu_model']}) and {m['memory_bytes'] / 2**30:.1f} GiB, with Kafka "
        f"{m['kafka_tools'] or '?'}, Redis ({r['redis']['persistence']}), both services "
        "and the load generators on the same machine.",
        f"Sizes: wrk {z['duration']:g} s per run, produce baselines {z['produce_events']:,} "
        f"records, consumer topic {z['consumer_events']:,} records "
        f"({z['duplicates']:.0%} duplicates), end to end {z['e2e_rate']:,.0f}/s for "
        f"{z['e2e_seconds']:g} s, memory {z['memory_events']:,} events.",
        "Each ratio divides a figure by its baseline from the same run. The goals and where the "
        "time goes: [performance.md](performance.md).",
        "",
        "| what | figure | same-run baseline | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["rows"]:
        cells = _cells(row)
        cells[0] = cells[0].strip()
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [
        "",
        "The client's \"acked\" rows are measured with no consumer running, as wrk's "
        'baseline is; its "stored" figures come from a second run with a consumer replica '
        "(bench/client.py).",
        "",
        "Figures move by ±20 % between runs on a machine this small, more while other work "
        "runs on it. Every run writes its figures and the commands behind them to "
        "`bench/results/` (`latest.json` is the newest); `make bench BENCH_ARGS=--help` "
        "lists the sizes.",
    ]
    return "\n".join(lines)


def write_bench_doc(r: dict[str, Any], path: Path) -> None:
    """Rewrite docs/benchmarks.md whole from the results `r` (read from `path`)."""
    try:
        source = str(path.resolve().relative_to(ROOT))
    except ValueError:
        source = str(path)
    BENCH_DOC.write_text(render_markdown({**r, "rows": rows(r)}, source) + "\n")
    progress("docs/benchmarks.md rewritten")
    if r.get("breakdown"):
        write_breakdown(breakdown.markdown(r["breakdown"], r["started_at"]))


PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
BREAKDOWN_START = "<!-- single-event breakdown: written by make bench -->"
BREAKDOWN_END = "<!-- end of single-event breakdown -->"


def write_breakdown(table: str) -> None:
    """Replace the marked single-event breakdown in docs/performance.md with `table`."""
    text = PERFORMANCE_DOC.read_text()
    start, end = text.find(BREAKDOWN_START), text.find(BREAKDOWN_END)
    if start < 0 or end < start:
        progress("docs/performance.md has no breakdown markers; left alone")
        return
    head, tail = text[: start + len(BREAKDOWN_START)], text[end:]
    PERFORMANCE_DOC.write_text(f"{head}\n{table}\n{tail}")
    progress("docs/performance.md: single-event breakdown rewritten")


def _tracking_rows(i: dict[str, Any]) -> list[dict[str, Any]]:
    """POST /v1/batch beside POST /events/batch at the same size, same run and process."""
    t = i.get("tracking")
    same = [b for b in i["batch"] if t is not None and b["batch"] == t["batch"]]
    if t is None or not same:
        return []
    eps, base = t["events_per_second"], same[0]["events_per_second"]
    rows = [
        _row(
            f"POST /v1/batch, {t['batch']}/request",
            f"{_n(eps)} ev/s",
            f"/events/batch, {t['batch']}/request: {_n(base)}/s",
            _ratio(eps, base),
            ">= 0.9",
            base > 0 and eps / base >= 0.9,
            eps,
        )
    ]
    cpu = t.get("cpu_us_per_acked")
    if cpu is not None:
        rows.append(
            _row(
                "  service CPU per acked message",
                f"{_n(cpu / t['batch'], 1)} us",
                value=cpu / t["batch"],
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())

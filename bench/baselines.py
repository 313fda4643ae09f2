"""Same-run baselines of `make bench`: what Kafka, bare confluent-kafka and Redis do on
this machine with none of the pipeline's code in the way.

    .venv/bin/python -m bench.baselines produce --events 200000
    .venv/bin/python -m bench.baselines consume --events 200000

* `produce_throughput`: records shaped like the pipeline's, produced as fast as one
  Python process can (acks=all, idempotent, lz4, linger 5 ms: the publisher's settings);
* `produce_in_flight`: at most `c` records unacknowledged at a time, each one produced
  when an earlier one is acknowledged: the Kafka path of `c` HTTP clients, with no HTTP;
* `consume_throughput`: a consumer that reads a topic and does nothing with it;
* `round_trip`: records produced at a steady rate, from acknowledgement to consumption
  by another consumer: what end to end latency would be with nothing but Kafka;
* `redis_store_loop`: the writes of the consumer's store script, as plain commands
  pipelined per batch, against the bench Redis;
* `producer_performance` / `consumer_performance`: Kafka's own perf tools (kafka-tools,
  resolved with the broker's jars by infra/kafka/pom.xml).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer

from bench.common import (
    ROOT,
    bench_producer,
    chunks,
    create_topics,
    delete_topics,
    percentile,
    pipeline_record,
    produce_or_wait,
    progress,
)
from shared.json_codec import compact_json


def produce_throughput(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    producer = bench_producer(bootstrap)
    started = time.monotonic()
    for i in range(n):
        produce_or_wait(producer, topic, pipeline_record(i))
        producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("bare produce: records left undelivered")
    seconds = time.monotonic() - started
    return {"events": n, "seconds": round(seconds, 2), "events_per_second": round(n / seconds)}


def produce_in_flight(
    bootstrap: str, topic: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Keep `concurrency` records unacknowledged; report acknowledged records per second
    and the produce-to-ack latency of each."""
    producer = bench_producer(bootstrap)
    latencies: list[float] = []
    failed = 0
    in_flight = 0

    def delivered(err: Any, _msg: Any, sent: float) -> None:
        nonlocal in_flight, failed
        in_flight -= 1
        if err is None:
            latencies.append(time.perf_counter() - sent)
        else:
            failed += 1

    def on_delivery(sent: float) -> Callable[[Any, Any], None]:
        return lambda err, msg: delivered(err, msg, sent)

    i = 0
    # The connection and the idempotent producer's handshake are not part of the figure.
    produce_or_wait(producer, topic, pipeline_record(0))
    producer.flush(10)
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        while in_flight < concurrency:
            sent = time.perf_counter()
            record = pipeline_record(i)
            i += 1
            producer.produce(
                topic,
                key=record["userId"].encode(),
                value=compact_json(record),
                on_delivery=on_delivery(sent),
            )
            in_flight += 1
        producer.poll(0.05)
    elapsed = time.perf_counter() - started
    acked = len(latencies)
    producer.flush(30)
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "acked": acked,
        "failed": failed,
        "acked_per_second": round(acked / elapsed, 1),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
    }


def consume_throughput(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    """Read `n` records of a pre-filled topic; timed from the first record, so joining
    the group is not counted (as for the worker)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-bare-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started: float | None = None
    deadline = time.monotonic() + 120
    while seen < n and time.monotonic() < deadline:
        batch = consumer.consume(500, 1.0)
        if batch and started is None:
            started = time.monotonic()
        seen += sum(1 for m in batch if m.error() is None)
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    if seen < n:
        raise SystemExit(f"bare consume: read {seen} of {n} records in 120 s")
    return {
        "events": n,
        "seconds": round(elapsed, 3),
        "events_per_second": round(n / max(elapsed, 1e-6)),
    }


def round_trip(
    bootstrap: str, topic: str, rate: float, seconds: float, warmup: float
) -> dict[str, Any]:
    """Produce at a steady `rate` (open loop: each record at its scheduled time, whatever
    the acknowledgements do) and time each record from produce() to its arrival at a
    consumer that was already assigned every partition (p50_ms, p99_ms), and from its
    acknowledgement to that arrival (ack_to_consumed_*)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-rt-{uuid.uuid4().hex[:8]}",
            # The topic is this baseline's own and empty: nothing old is read.
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    assigned = threading.Event()
    consumer.subscribe([topic], on_assign=lambda c, parts: assigned.set())
    arrived: dict[bytes, float] = {}
    acked: dict[bytes, float] = {}
    produced: dict[bytes, float] = {}
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.1)
            value = None if msg is None or msg.error() else msg.value()
            if value is not None:
                arrived[value] = time.monotonic()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    if not assigned.wait(30):
        raise SystemExit("round trip: the consumer was not assigned the topic in 30 s")

    producer = bench_producer(bootstrap)

    def on_ack(err: Any, msg: Any) -> None:
        if err is None:
            acked[msg.value()] = time.monotonic()

    def serve_acks() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    # Acknowledgements are served by their own thread, so a record's ack time is not held
    # back by the sender's sleep until the next scheduled record.
    poller = threading.Thread(target=serve_acks, daemon=True)
    poller.start()
    total = int(rate * (seconds + warmup))
    measured_from = int(rate * warmup)
    records = [pipeline_record(i) for i in range(total)]
    values = [compact_json(r) for r in records]
    start = time.monotonic()
    late = 0
    for i, value in enumerate(values):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.01:
            late += 1
        produced[value] = time.monotonic()
        producer.produce(topic, key=records[i]["userId"].encode(), value=value, on_delivery=on_ack)
    producer.flush(30)
    time.sleep(1.0)
    stop.set()
    reader.join(5)
    poller.join(5)
    consumer.close()
    counted = [v for v in values[measured_from:] if v in arrived and v in acked]
    # The consumer may be handed a record a little before its producer hears the ack.
    from_ack = [max(0.0, arrived[v] - acked[v]) for v in counted]
    from_produce = [arrived[v] - produced[v] for v in counted]
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": total - measured_from,
        "measured": len(counted),
        "late_sends": late,
        "p50_ms": _ms(percentile(from_produce, 50)),
        "p99_ms": _ms(percentile(from_produce, 99)),
        "ack_to_consumed_p50_ms": _ms(percentile(from_ack, 50)),
        "ack_to_consumed_p99_ms": _ms(percentile(from_ack, 99)),
    }


def redis_store_loop(url: str, prefix: str, n: int, batch: int = 500) -> dict[str, Any]:
    """The store step with no Lua, no validation and no Kafka: per event the same writes
    the store script makes (dedup mark, body, three index entries, two counters), one
    pipelined MULTI/EXEC round trip per batch, bodies encoded before the clock starts.
    MULTI/EXEC, not a bare pipeline: like the script, a batch is then applied at once
    and costs one AOF fsync, where a bare pipeline of ~3,500 commands is read in many
    chunks and fsynced after each."""
    client = redis.Redis.from_url(url)
    rows = []
    for i in range(n):
        record = pipeline_record(i)
        rows.append(
            (record["eventId"], record["userId"], record["eventType"], compact_json(record))
        )
    started = time.monotonic()
    seq = 0
    for part in chunks(rows, batch):
        pipe = client.pipeline(transaction=True)
        for event_id, user, etype, body in part:
            seq += 1
            pipe.set(f"{prefix}:seen:{event_id}", "0:0", nx=True, ex=7 * 24 * 3600)
            pipe.set(f"{prefix}:event:{event_id}", body)
            pipe.zadd(f"{prefix}:index", {event_id: seq})
            pipe.zadd(f"{prefix}:user:{user}", {event_id: seq})
            pipe.zadd(f"{prefix}:type:{etype}", {event_id: seq})
            pipe.hincrby(f"{prefix}:stats", "processed", 1)
            pipe.hincrby(f"{prefix}:stats", f"type:{etype}", 1)
        pipe.execute()
    seconds = time.monotonic() - started
    client.close()
    return {
        "events": n,
        "batch": batch,
        "seconds": round(seconds, 3),
        "events_per_second": round(n / max(seconds, 1e-6)),
    }


# -- Kafka's own tools -----------------------------------------------------------------


def kafka_libs() -> Path:
    """The broker's jars (kafka-tools among them), resolved by Maven the way
    infra/kafka.sh does when the broker in use was not started by it."""
    libs = Path(os.environ.get("LOCAL_STATE_DIR", ROOT / ".local")) / "kafka" / "libs"
    if not (libs / ".complete").exists():
        progress("resolving the Kafka jars (kafka-tools) with Maven, first run only")
        subprocess.run(
            ["mvn", "-q", "-B", "-f", str(ROOT / "infra" / "kafka" / "pom.xml"),
             "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={libs}"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        (libs / ".complete").touch()
    return libs


def _java(tool: str, *args: str) -> tuple[list[str], str]:
    cmd = ["java", "-Xmx512m", "-cp", f"{kafka_libs()}/*", f"org.apache.kafka.tools.{tool}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{tool} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return cmd, done.stdout


def producer_performance(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    cmd, out = _java(
        "ProducerPerformance",
        "--bootstrap-server", bootstrap, "--topic", topic, "--num-records", str(n),
        "--record-size", "300", "--throughput", "-1", "--command-property",
        "acks=all", "enable.idempotence=true", "compression.type=lz4",
    )  # fmt: skip
    # The last line is the summary: "N records sent, R records/sec (…), A ms avg latency, …"
    summary = [line for line in out.splitlines() if " records sent, " in line][-1]
    fields = summary.split(",")
    return {
        "command": " ".join(cmd),
        "events": n,
        "record_bytes": 300,
        "events_per_second": round(float(fields[1].split()[0])),
        "summary": summary.strip(),
    }


def consumer_performance(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    cmd, out = _java(
        "ConsumerPerformance",
        "--bootstrap-server", bootstrap, "--topic", topic, "--num-records", str(n),
        "--group", f"bench-cperf-{uuid.uuid4().hex[:8]}", "--timeout", "30000",
    )  # fmt: skip
    lines = [line for line in out.splitlines() if line.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    values = dict(zip(header, (v.strip() for v in lines[-1].split(",")), strict=True))
    return {
        "command": " ".join(cmd),
        "events": int(values["data.consumed.in.nMsg"]),
        # Fetch rate, without the group join: the worker's figure leaves it out too.
        "events_per_second": round(float(values["fetch.nMsg.sec"])),
        "with_join_events_per_second": round(float(values["nMsg.sec"])),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["produce", "consume"])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    args = parser.parse_args()
    topic = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    create_topics(args.bootstrap, [topic])
    try:
        result = produce_throughput(args.bootstrap, topic, args.events)
        if args.mode == "consume":
            result = consume_throughput(args.bootstrap, topic, args.events)
    finally:
        delete_topics(args.bootstrap, [topic])
    print(json.dumps({"baseline": f"bare confluent-kafka {args.mode}", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Same-run baselines for `make bench`: what bare confluent-kafka does on this machine.

    .venv/bin/python bench/baselines.py produce --events 200000
    .venv/bin/python bench/baselines.py consume --events 200000

`produce` writes N records shaped like the pipeline's events (same size, keyed by user,
acks=all, idempotent, lz4) from one Python process with no HTTP and no validation: the
ceiling the producer service is compared against. `consume` reads them back with a bare
consumer that does nothing with them: the ceiling of the consumer worker. Each prints one
JSON line. The topic is created and deleted here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.topics import ensure_topics
from shared.events import compact_json, enrich, record_headers


def produce(bootstrap: str, topic: str, n: int) -> float:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    template = {"userId": "", "eventType": "PRODUCT_VIEW", "payload": {}}
    started = time.monotonic()
    for i in range(n):
        template["userId"] = f"user-{i % 1000}"
        template["payload"] = {"productId": f"sku-{i}", "price": 19.99, "currency": "EUR"}
        record = enrich(template)
        while True:
            try:
                producer.produce(
                    topic,
                    key=record["userId"].encode(),
                    value=compact_json(record),
                    headers=record_headers(record),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise SystemExit("records left undelivered")
    return time.monotonic() - started


def consume(bootstrap: str, topic: str, n: int) -> float:
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
    started = None
    while seen < n:
        batch = consumer.consume(500, 1.0)
        if batch and started is None:
            started = time.monotonic()
        seen += sum(1 for m in batch if m.error() is None)
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["produce", "consume"])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    args = parser.parse_args()
    topic = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    ensure_topics(args.bootstrap, [topic], 6)
    try:
        seconds = produce(args.bootstrap, topic, args.events)
        if args.mode == "consume":
            seconds = consume(args.bootstrap, topic, args.events)
    finally:
        AdminClient({"bootstrap.servers": args.bootstrap}).delete_topics([topic])
    result = {
        "baseline": f"bare confluent-kafka {args.mode}",
        "events": args.events,
        "seconds": round(seconds, 2),
        "events_per_second": round(args.events / seconds),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Consumer throughput and Redis memory per event, from a pre-filled topic.

    .venv/bin/python bench/consumer_throughput.py [--events 100000] [--batch-size 500]

1. Creates a fresh topic (6 partitions) and fills it with N valid records, keyed by
   user, as the producer writes them.
2. Starts a private redis-server (AOF, appendfsync always: the production setting) on
   a free port, unless --redis-url is given.
3. Starts ONE worker (the same Worker class `consumer-service` runs, logging its JSON
   line per event to /dev/null) and times it from start until Redis holds all N events.
4. Reports events/s, and Redis memory per stored event (used_memory delta / N).

Everything it created (topics, keys, the private Redis) is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer_service.config import ConsumerSettings  # noqa: E402
from consumer_service.store import RedisEventStore  # noqa: E402
from consumer_service.worker import Worker  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from shared.config import CommonSettings  # noqa: E402
from shared.events import compact_json, enrich, record_headers  # noqa: E402
from shared.logs import configure_logging  # noqa: E402

EVENT_TYPES = ("LOGIN", "LOGOUT", "PRODUCT_VIEW")


def fill(bootstrap: str, topic: str, n: int, users: int) -> float:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    started = time.monotonic()
    for i in range(n):
        event = {
            "userId": f"user-{i % users}",
            "eventType": EVENT_TYPES[i % 3],
            "payload": {"page": f"/products/{i % 997}", "device": "mobile"},
        }
        record = enrich(event)
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
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0, "not every record was acknowledged"
    return time.monotonic() - started


def private_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            directory,
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis instead of a private one (memory figure is then "
        "skewed by other users)",
    )
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    topic = f"bench-consumer-{run}"
    prefix = f"bench:{run}"
    ensure_topics(args.bootstrap, [topic, f"{topic}.dlq"], 6)
    tmp = tempfile.mkdtemp(prefix="bench-redis-")
    server, url = (None, args.redis_url) if args.redis_url else private_redis(tmp)
    client = redis.Redis.from_url(url)
    try:
        fill_s = fill(args.bootstrap, topic, args.events, args.users)
        print(f"filled {topic} with {args.events} records in {fill_s:.1f} s", flush=True)

        settings = ConsumerSettings(
            common=CommonSettings(
                kafka_bootstrap_servers=args.bootstrap, kafka_topic=topic, redis_url=url
            ),
            consumer_group=f"bench-{run}",
            redis_prefix=prefix,
            batch_size=args.batch_size,
        )
        # The worker's per-event JSON lines are part of its cost: formatted, then dropped.
        devnull = open(os.devnull, "w")  # noqa: SIM115
        real_stderr, sys.stderr = sys.stderr, devnull
        configure_logging("INFO", service="consumer-bench")
        sys.stderr = real_stderr

        used_before = int(client.info("memory")["used_memory"])
        store = RedisEventStore.from_url(
            url,
            prefix,
            settings.dedup_ttl_seconds,
            retention_max_events=settings.retention_max_events,
        )
        worker = Worker(settings, store)
        thread = threading.Thread(target=worker.run, daemon=True)
        started = time.monotonic()
        thread.start()
        stats_key = f"{prefix}:stats"
        while int(client.hget(stats_key, "processed") or 0) < args.events:
            time.sleep(0.02)
            if not thread.is_alive():
                raise SystemExit("the worker stopped early")
        elapsed = time.monotonic() - started
        worker.request_stop()
        thread.join(30)
        used_after = int(client.info("memory")["used_memory"])
        devnull.close()

        sample = client.zrange(f"{prefix}:index", 0, 0)[0].decode()
        per_key = {
            "seen": client.memory_usage(f"{prefix}:seen:{sample}"),
            "event": client.memory_usage(f"{prefix}:event:{sample}"),
        }
        result = {
            "events": args.events,
            "batch_size": args.batch_size,
            "seconds": round(elapsed, 2),
            "events_per_second": round(args.events / elapsed),
            "redis_bytes_per_event": round((used_after - used_before) / args.events),
            "memory_usage_of_one_event_keys": per_key,
            "stored_event_json_bytes": len(client.get(f"{prefix}:event:{sample}") or b""),
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if server is not None:
            server.kill()
            server.wait()
        else:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
            for i in range(0, len(keys), 10_000):
                client.delete(*keys[i : i + 10_000])
        shutil.rmtree(tmp, ignore_errors=True)
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        for future in admin.delete_topics([topic, f"{topic}.dlq"]).values():
            future.result()


if __name__ == "__main__":
    sys.exit(main())

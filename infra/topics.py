"""Local-stack helper: wait for a Kafka broker and create the pipeline's topics.

    python infra/topics.py wait   [--bootstrap HOST:PORT] [--timeout S]
    python infra/topics.py ensure [--bootstrap HOST:PORT] [--topic NAME] [--partitions N]

`ensure` creates the event topic and its dead-letter topic (`<topic>.dlq`) when they are
missing and leaves existing ones untouched. Defaults come from the same environment
variables the services read (KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC, KAFKA_TOPIC_PARTITIONS).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def wait_for_broker(bootstrap: str, timeout: float) -> bool:
    """Return True once the broker answers a metadata request, False after `timeout` s."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(0.2, min(1.0, remaining)))
            return True
        except KafkaException:
            if remaining <= 0:
                return False
            time.sleep(0.2)


def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int) -> list[str]:
    """Create each missing topic with `partitions` partitions; return the ones created.

    A topic that already exists is left alone, even with another partition count.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=10).topics
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    # The replication factor is the broker's `default.replication.factor`: 1 on the local
    # single-node broker, and whatever a real cluster's operators chose (with
    # min.insync.replicas, it decides what acks=all is worth).
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions) for n in missing],
        operation_timeout=10,
        request_timeout=15,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    # Creation is acknowledged before every partition has a leader; wait for them so a
    # producer started right after does not see "unknown partition".
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(
            n in topics
            and topics[n].error is None
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            break
        time.sleep(0.1)
    return created


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["wait", "ensure"])
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--topic", default=os.environ.get("KAFKA_TOPIC", "user-activity-events"))
    parser.add_argument(
        "--partitions", type=int, default=int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "6"))
    )
    args = parser.parse_args(argv)
    if args.command == "wait":
        return 0 if wait_for_broker(args.bootstrap, args.timeout) else 1
    if not wait_for_broker(args.bootstrap, args.timeout):
        print(f"[topics] no Kafka broker answers at {args.bootstrap}", file=sys.stderr)
        return 1
    created = ensure_topics(args.bootstrap, [args.topic, f"{args.topic}.dlq"], args.partitions)
    for name in created:
        print(f"[topics] created {name} ({args.partitions} partitions)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

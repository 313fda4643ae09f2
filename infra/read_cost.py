"""What the read API's queries cost on the single-node store: fills a fresh key prefix
with events, then sends each query of QUERIES `--repeat` times to the real read API (in
process, the store on a real Redis) and prints, per query, the milliseconds, the Redis
round trips and commands, and the response bytes per request. Deletes its keys at the
end.

    .venv/bin/python infra/read_cost.py [--redis-url URL] [--events N] [--payload-bytes B]

Counts come from the connection (one round trip per packet sent, one command per reply),
so they do not depend on how busy the machine is; the milliseconds do.
"""

from __future__ import annotations

import argparse
import calendar
import time
import uuid
from typing import Any

import redis

from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import RedisEventStore
from shared.config import CommonSettings

# (name, query string): every event is stored before the far-future `since`.
QUERIES = [
    ("limit=1", "limit=1"),
    ("far-future since, limit=1", "since=9999-01-01T00:00:00Z&limit=1"),
    ("far-past until, limit=1000", "until=1970-01-01T00:00:00Z&limit=1000"),
    ("last 10 minutes, limit=1000", "since=2026-11-23T23:50:00Z&limit=1000"),
    ("one user and type, limit=100", "userId=u7&eventType=LOGIN&limit=100"),
    ("limit=1000", "limit=1000"),
]


# 2026-11-24T00:00:00Z: the events end a minute before it.
MIDNIGHT = calendar.timegm((2026, 11, 24, 0, 0, 0))


class CountingConnection(redis.Connection):
    round_trips = 0
    commands = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        CountingConnection.commands += 1
        return super().read_response(*args, **kwargs)


def fill(store: RedisEventStore, events: int, payload_bytes: int) -> None:
    """`events` events, one a minute up to 2026-11-24T00:00Z, 50 users, two types."""
    batch: list[Accepted] = []
    for i in range(events):
        stamp = time.gmtime(MIDNIGHT - 60 * (events - i))
        record = {
            "eventId": str(uuid.uuid4()),
            "userId": f"u{i % 50}",
            "eventType": "LOGIN" if i % 2 else "VIEW",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", stamp),
            "payload": {"data": "x" * payload_bytes},
            "schemaVersion": 1,
        }
        batch.append(Accepted(record, 0, i))
        if len(batch) == 500:
            store.store_batch(batch, "2026-11-24T00:00:00.000Z")
            batch = []
    if batch:
        store.store_batch(batch, "2026-11-24T00:00:00.000Z")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    prefix = f"readcost:{uuid.uuid4().hex[:12]}"
    pool = redis.ConnectionPool.from_url(args.redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    settings = ConsumerSettings(
        common=CommonSettings(redis_url=args.redis_url), redis_prefix=prefix
    )
    store = RedisEventStore(client, prefix, settings.dedup_ttl_seconds)
    try:
        fill(store, args.events, args.payload_bytes)
        api = create_app(settings, store).test_client()
        print(f"{args.events} events of ~{args.payload_bytes}-byte payloads, {args.repeat} each")
        print("| query | ms/query | round trips/query | commands/query | bytes/answer |")
        print("|---|---:|---:|---:|---:|")
        for name, query in QUERIES:
            api.get(f"/events/processed?{query}")  # warm: connection, script cache
            CountingConnection.round_trips = CountingConnection.commands = 0
            size = 0
            start = time.perf_counter()
            for _ in range(args.repeat):
                answer = api.get(f"/events/processed?{query}")
                assert answer.status_code == 200, answer.get_data(as_text=True)
                size = len(answer.get_data())
            ms = (time.perf_counter() - start) * 1000 / args.repeat
            trips = CountingConnection.round_trips / args.repeat
            commands = CountingConnection.commands / args.repeat
            print(f"| `{name}` | {ms:.2f} | {trips:.0f} | {commands:.0f} | {size} |")
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for first in range(0, len(keys), 1000):
            client.delete(*keys[first : first + 1000])
        client.close()


if __name__ == "__main__":
    main()

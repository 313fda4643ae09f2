"""Memory figures of `make bench`: the RSS of every service process while the pipeline
processes M events, and what Redis keeps per stored event.

Events go in through `POST /events/batch` (1,000 per request), with the producer kept at
most `window` events ahead of the consumer so that both work through the whole run. At
every tenth of M processed (100,000, 200,000, … when M is 1,000,000) the resident set of
each process of both services is read from /proc. A process is flat when every sample
is within ±10% of its first one.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.common import (
    BenchRedis,
    Service,
    command_line,
    descendants,
    parent_of,
    progress,
    rss_bytes,
)
from shared.json_codec import compact_json

FLAT_WITHIN = 0.10


def roles(service: Service, kind: str) -> dict[str, int]:
    """Name each process of a service's tree by its place in it. The producer: gunicorn's
    master is the `producer-service` process, its children the workers. The consumer:
    the `consumer-service` process runs the worker; its child is the read API's gunicorn
    master, whose children are the API workers."""
    named: dict[str, int] = {}
    top = service.proc.pid
    children = sorted(c for c in descendants(top) if parent_of(c) == top)
    if kind == "producer":
        named["producer master (gunicorn)"] = top
        for n, pid in enumerate(children, 1):
            named[f"producer worker {n}"] = pid
    else:
        named["consumer worker"] = top
        for child in children:
            named["consumer API master (gunicorn)"] = child
            grandchildren = sorted(g for g in descendants(child) if parent_of(g) == child)
            for n, pid in enumerate(grandchildren, 1):
                named[f"consumer API worker {n}"] = pid
    return named


def _feed(port: int, stop: threading.Event, allowed: Callable[[], bool], sent: list[int]) -> None:
    body = json.dumps(
        {
            "events": [
                {
                    "userId": f"user-{i % 1000}",
                    "eventType": "PRODUCT_VIEW",
                    "payload": {"productId": f"sku-{i}", "price": 19.99, "currency": "EUR"},
                }
                for i in range(1000)
            ]
        }
    ).encode()
    conn = http.client.HTTPConnection(f"127.0.0.1:{port}", timeout=30)
    headers = {"Content-Type": "application/json"}
    while not stop.is_set():
        if not allowed():
            time.sleep(0.02)
            continue
        try:
            conn.request("POST", "/events/batch", body, headers)
            answer = conn.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            sent[1] += 1
            time.sleep(0.1)
            continue
        if answer.status == 201:
            sent[0] += 1000
        else:
            sent[1] += 1


def run(
    producer: Service,
    consumer: Service,
    store: BenchRedis,
    counts: Callable[[], int],
    stored: Callable[[], int],
    used_memory_before: int,
    *,
    events: int,
    window: int = 50_000,
) -> dict[str, Any]:
    """Feed `events` through the running services and sample memory along the way.
    `counts()` is the consumer's processed + duplicates; `stored()` the events it keeps."""
    start_count = counts()
    window = max(2000, min(window, events // 5))
    step = max(1, events // 10)
    thresholds = [start_count + step * k for k in range(1, 11)]
    sent = [0, 0]  # events acked, requests failed
    stop = threading.Event()

    def allowed() -> bool:
        return sent[0] < events and sent[0] - (counts() - start_count) < window

    feeder = threading.Thread(target=_feed, args=(producer.port, stop, allowed, sent), daemon=True)
    samples: list[dict[str, Any]] = []
    names = {**roles(producer, "producer"), **roles(consumer, "consumer")}
    feeder.start()
    last_note = time.monotonic()
    try:
        deadline = time.monotonic() + 300 + events / 300
        while thresholds:
            done = counts()
            if done >= thresholds[0]:
                # One sample per threshold crossed, even when the consumer crossed several
                # between two polls (small runs): the series then still has its ten points,
                # each stamped with the count it was really taken at.
                thresholds.pop(0)
                sample: dict[str, Any] = {
                    "processed": done - start_count,
                    "rss": {name: rss_bytes(pid) for name, pid in names.items()},
                    "redis_used_memory": store.used_memory(),
                }
                samples.append(sample)
                progress(
                    f"  {done - start_count:,} processed: "
                    + ", ".join(
                        f"{n.split(' (')[0]} {(v or 0) / 2**20:.0f}"
                        for n, v in sample["rss"].items()
                    )
                    + " MiB"
                )
                last_note = time.monotonic()
                continue
            if not (producer.alive() and consumer.alive()):
                raise SystemExit("a service exited during the memory run")
            if time.monotonic() > deadline:
                raise SystemExit(f"memory run: {done - start_count:,} of {events:,} processed")
            if time.monotonic() - last_note > 10:
                progress(f"  {done - start_count:,} of {events:,} processed")
                last_note = time.monotonic()
            time.sleep(0.05)
    finally:
        stop.set()
        feeder.join(60)
    current = {**roles(producer, "producer"), **roles(consumer, "consumer")}
    processes = {}
    for name, pid in names.items():
        series: list[int | None] = [s["rss"][name] for s in samples]
        first = series[0]
        known = [v for v in series if v is not None]
        change = (
            max(abs(v - first) for v in known) / first
            if first and len(known) == len(series)
            else None
        )
        processes[name] = {
            "pid": pid,
            "command": command_line(pid)[:120],
            "replaced_during_run": current.get(name) != pid,
            "first_bytes": first,
            "last_bytes": series[-1],
            "max_change": None if change is None else round(change, 4),
            "flat": change is not None and change <= FLAT_WITHIN,
        }
    kept = stored()
    used_after = store.used_memory()
    return {
        "events": events,
        "samples_at_processed": [s["processed"] for s in samples],
        "processes": processes,
        "samples": samples,
        "requests_failed": sent[1],
        "redis": {
            "private": store.private,
            "stored_events": kept,
            "used_memory_before": used_memory_before,
            "used_memory_after": used_after,
            "bytes_per_stored_event": round((used_after - used_memory_before) / max(kept, 1)),
        },
    }


def stored_body_bytes(consumer_port: int, sample: int = 200) -> float | None:
    """Mean size of a stored event as compact JSON, from the read API's first page."""
    conn = http.client.HTTPConnection(f"127.0.0.1:{consumer_port}", timeout=10)
    try:
        conn.request("GET", f"/events/processed?limit={sample}")
        answer = conn.getresponse()
        events = json.loads(answer.read()).get("events", [])
    finally:
        conn.close()
    if not events:
        return None
    return sum(len(compact_json(e)) for e in events) / len(events)


def stored_count(consumer_port: int) -> int:
    """Events the consumer keeps, from the read API's /stats."""
    conn = http.client.HTTPConnection(f"127.0.0.1:{consumer_port}", timeout=10)
    try:
        conn.request("GET", "/stats")
        return int(json.loads(conn.getresponse().read())["stored"])
    finally:
        conn.close()

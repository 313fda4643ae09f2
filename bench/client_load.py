"""One client process of the bench's client part (bench/client.py starts it):

    python -m bench.client_load URL EVENTS [--spool PATH] [--threads N]

Tracks EVENTS events shaped as bench/wrk/batch.lua's (1,000 users) from N threads, then
flushes, and prints one JSON line: the wall-clock time of the first track() call (so
the parent can time "tracked to stored"), the seconds the track() calls took, their mean
cost in microseconds per call per thread (wall clock, and the calling thread's CPU: on a
busy machine the first also holds time the process was not running), and the seconds
until everything was acknowledged. Needs `client/` on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from activity_client import EventClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("events", type=int)
    parser.add_argument("--spool")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sync", default="full", choices=["full", "normal"])
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args(argv)
    client = EventClient(
        args.url,
        spool_path=args.spool,
        spool_sync=args.sync,
        senders=args.senders,
        max_queue=max(args.events, 1),
    )
    per_thread = args.events // args.threads
    costs: list[float] = []
    cpu_costs: list[float] = []

    def tracker(offset: int) -> None:
        track = client.track
        started = time.perf_counter()
        cpu = time.thread_time()
        for i in range(offset, offset + per_thread):
            payload = {"productId": f"sku-{i}", "price": 19.99, "currency": "EUR"}
            track(f"user-{i % 1000}", "PRODUCT_VIEW", payload)
        costs.append((time.perf_counter() - started) / per_thread * 1e6)
        cpu_costs.append((time.thread_time() - cpu) / per_thread * 1e6)

    threads = [
        threading.Thread(target=tracker, args=(n * per_thread,)) for n in range(args.threads)
    ]
    first = time.time()
    clock = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tracked = time.perf_counter() - clock
    ok = client.flush(600)
    acked = time.perf_counter() - clock
    counters = client.counters()
    client.close(10)
    result = {
        "events": per_thread * args.threads,
        "threads": args.threads,
        "spool": args.spool is not None,
        "first_track_at": first,
        "track_seconds": round(tracked, 3),
        "track_us": round(sum(costs) / len(costs), 2),
        "track_cpu_us": round(sum(cpu_costs) / len(cpu_costs), 2),
        "sync": args.sync,
        "acked_seconds": round(acked, 3),
        "all_acked": ok,
        "sent": counters.sent,
        "retries": counters.retries,
    }
    print("CLIENT_JSON " + json.dumps(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Client processes the tests start, kill and resume.

    python -m tests.integration.client.child track URL SPOOL PREFIX   # tracks until killed
    python -m tests.integration.client.child resume URL SPOOL         # sends what the spool holds
    python -m tests.integration.client.child fork URL PREFIX          # tracks, forks, both track
    python -m tests.integration.client.child fork-spool URL SPOOL PREFIX  # the same, spooled;
                                                                      # the child dies unflushed

`track` prints each event's `n` once `track()` returned (so: once it is in the spool).
"""

from __future__ import annotations

import os
import sys
import time

from activity_client import EventClient


def track(url: str, spool: str, prefix: str) -> int:
    client = EventClient(url, spool_path=spool, max_batch_events=50, flush_interval=0.02)
    n = 0
    while True:
        assert client.track(f"{prefix}-{n % 4}", "PRODUCT_VIEW", {"n": n})
        print(n, flush=True)
        n += 1
        time.sleep(0.0005)


def resume(url: str, spool: str) -> int:
    client = EventClient(url, spool_path=spool)
    queued = client.counters().queued
    ok = client.close(60)
    print(f"resent {queued} ok {ok}", flush=True)
    return 0 if ok else 1


def fork(url: str, prefix: str) -> int:
    # A long interval: the parent's events are still queued when it forks.
    client = EventClient(url, flush_interval=1.0)
    for n in range(100):
        client.track(f"{prefix}-parent", "PRODUCT_VIEW", {"n": n})
    pid = os.fork()
    if pid == 0:
        for n in range(100):
            client.track(f"{prefix}-child", "PRODUCT_VIEW", {"n": n})
        # No close(): the child relies on the exit-time flush, as a gunicorn worker
        # or a script would.
        sys.exit(0)
    for n in range(100, 200):
        client.track(f"{prefix}-parent", "PRODUCT_VIEW", {"n": n})
    _, status = os.waitpid(pid, 0)
    ok = client.close(30)
    print(f"child status {status} parent ok {ok}", flush=True)
    return 0 if ok and status == 0 else 1


def fork_spool(url: str, spool: str, prefix: str) -> int:
    client = EventClient(url, spool_path=spool, flush_interval=1.0)
    for n in range(50):
        client.track(f"{prefix}-parent", "PRODUCT_VIEW", {"n": n})
    pid = os.fork()
    if pid == 0:
        for n in range(50):
            client.track(f"{prefix}-child", "PRODUCT_VIEW", {"n": n})
        os._exit(0)  # dies with everything unsent: only its own spool file has the events
    _, status = os.waitpid(pid, 0)
    for n in range(50, 100):
        client.track(f"{prefix}-parent", "PRODUCT_VIEW", {"n": n})
    client.close(0.5)
    print(f"child status {status}", flush=True)
    return 0 if status == 0 else 1


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "track":
        return track(*args)
    if command == "resume":
        return resume(*args)
    if command == "fork-spool":
        return fork_spool(*args)
    return fork(*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

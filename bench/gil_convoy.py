"""Shows why eventIds of a batch come from one os.urandom read (shared.events.random_event_ids).

    .venv/bin/python bench/gil_convoy.py

Validates and enriches batches of 500 events in 1 and in 8 threads, once with uuid4() per
event and once with enrich_batch(). Every os.urandom call releases the GIL; with other
threads busy, each release can cost a switch interval before the caller runs again.
"""

import threading
import time

from shared.events import EventInputSchema, enrich, enrich_batch

schema = EventInputSchema(("LOGIN", "LOGOUT", "PRODUCT_VIEW"))
events = [
    {
        "userId": f"user-{i}",
        "eventType": "PRODUCT_VIEW",
        "payload": {"productId": f"sku-{i}", "price": 19.99},
    }
    for i in range(500)
]


def work_old():
    loaded = schema.load(events, many=True)
    return [enrich(e) for e in loaded]


def work_new():
    loaded = schema.load(events, many=True)
    return enrich_batch(loaded)


def run(fn, threads, seconds=2):
    count = [0]
    stop = time.monotonic() + seconds

    def loop():
        while time.monotonic() < stop:
            fn()
            count[0] += 500

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return count[0] / seconds


for threads in (1, 8):
    for name, fn in (
        ("uuid4 per event", work_old),
        ("one urandom per batch", work_new),
        ("uuid4 per event", work_old),
        ("one urandom per batch", work_new),
    ):
        print(f"{threads} threads, {name}: {run(fn, threads):,.0f} events/s")

"""The client against the real producer, Kafka, consumer and read API, under faults.

Each test tracks numbered events for users of its own and checks through the read API
that every valid tracked event is stored exactly once, in each user's track order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from activity_client import EventClient

from tests.integration.client.conftest import Producer, Stack, expect_stored
from tests.services import free_port

pytestmark = pytest.mark.integration


def users(prefix: str, count: int = 4) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


class Tracker:
    """Tracks events n = 0, 1, 2 ... round-robin over `names` from a thread, `pause`
    seconds apart, until stopped; `sent` is each user's tracked `n`s in order."""

    def __init__(self, client: EventClient, names: list[str], pause: float = 0.001) -> None:
        self.client = client
        self.names = names
        self.pause = pause
        self.sent: dict[str, list[int]] = {name: [] for name in names}
        self.n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.track_one()
            time.sleep(self.pause)

    def track_one(self) -> None:
        user = self.names[self.n % len(self.names)]
        assert self.client.track(user, "PRODUCT_VIEW", {"n": self.n})
        self.sent[user].append(self.n)
        self.n += 1

    def __enter__(self) -> Tracker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_producer_sigterm_and_restart_mid_stream(
    stack: Stack, start_producer: Callable[..., Producer]
) -> None:
    port = free_port()
    first = start_producer(port, PRODUCER_LINGER_MS="50")
    client = EventClient(first.url, max_batch_events=50, flush_interval=0.02)
    with Tracker(client, users("sigterm")) as tracker:
        time.sleep(1.0)
        assert first.sigterm(30) == 0
        time.sleep(0.5)  # tracking goes on with nobody listening
        start_producer(port)
        time.sleep(1.0)
    assert client.flush(60)
    counters = client.counters()
    assert client.close(5)
    assert counters.retries > 0, "the restart was never noticed; the test proved nothing"
    assert counters.sent == counters.tracked == tracker.n
    expect_stored(stack, tracker.sent)


def test_broker_unavailable_then_back(
    stack: Stack, start_producer: Callable[..., Producer]
) -> None:
    port = free_port()
    # Nothing listens on port 1: the producer answers every batch 503.
    dead = start_producer(
        port, wait="/health", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", PRODUCER_ACK_TIMEOUT_MS="300"
    )
    client = EventClient(dead.url, max_batch_events=100, flush_interval=0.02)
    tracker = Tracker(client, users("broker"))
    for _ in range(400):
        tracker.track_one()
    assert not client.flush(1.5)
    assert client.counters().retries > 0 and client.counters().sent == 0
    assert dead.sigterm(30) == 0
    start_producer(port)
    assert client.flush(60)
    assert client.close(5)
    expect_stored(stack, tracker.sent)


def test_rate_limit_429_with_retry_after(
    stack: Stack, start_producer: Callable[..., Producer]
) -> None:
    producer = start_producer(PRODUCER_RATE_LIMIT="300/second", PRODUCER_WORKERS="1")
    client = EventClient(producer.url, max_batch_events=100)
    tracker = Tracker(client, users("quota"))
    for _ in range(1200):
        tracker.track_one()
    started = time.monotonic()
    assert client.flush(60)
    elapsed = time.monotonic() - started
    assert client.counters().retries > 0, "no 429 was met; the test proved nothing"
    assert client.close(5)
    # 1,200 events at 300/s cannot go through in much less than 3 s.
    assert elapsed > 2.5
    expect_stored(stack, tracker.sent)


def test_oversized_batches_and_invalid_events(
    stack: Stack, start_producer: Callable[..., Producer]
) -> None:
    # Batches over 8 KiB are 413s; the client's own limit (1 MiB) does not know that.
    producer = start_producer(PRODUCER_MAX_BATCH_BYTES="8192", PRODUCER_MAX_PAYLOAD_BYTES="2048")
    refused: list[tuple[dict[str, object], str]] = []
    client = EventClient(
        producer.url,
        max_batch_events=500,
        flush_interval=0.5,
        on_error=lambda events, reason: refused.extend((e, reason) for e in events),
    )
    names = users("mixed")
    sent: dict[str, list[int]] = {name: [] for name in names}
    invalid = []
    for n in range(600):
        user = names[n % len(names)]
        if n % 50 == 7:
            invalid.append(n)
            assert client.track(user, "NOT_A_TYPE", {"n": n})
        elif n % 50 == 19:
            invalid.append(n)  # payload over PRODUCER_MAX_PAYLOAD_BYTES: a 400 item
            assert client.track(user, "LOGIN", {"n": n, "pad": "x" * 3000})
        elif n == 333:
            invalid.append(n)  # alone over the 8 KiB body limit: a 413 for one event
            assert client.track(user, "LOGIN", {"n": n, "pad": "y" * 9000})
        else:
            assert client.track(user, "PRODUCT_VIEW", {"n": n, "pad": "z" * 200})
            sent[user].append(n)
    # Identical events are distinct events: each is stored.
    for _ in range(5):
        assert client.track("mixed-same", "LOGIN")
    assert not client.flush(60)  # some were refused: not everything was acknowledged
    assert client.close(5)
    assert sorted(int(e["payload"]["n"]) for e, _ in refused) == invalid  # type: ignore[call-overload]
    assert all(reason.startswith(("400", "413")) for _, reason in refused)
    counters = client.counters()
    assert counters.failed == len(invalid)
    assert counters.sent == 600 - len(invalid) + 5
    expect_stored(stack, sent)
    same = stack.stored({"mixed-same"})
    assert len(same) == 5 and len({e["eventId"] for e in same}) == 5

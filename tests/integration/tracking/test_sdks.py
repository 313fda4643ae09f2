"""Segment's and RudderStack's Python SDKs, unchanged, against a real `producer-service`,
a real consumer replica and its read API: what they track is stored once, through a
producer restart, a quota answering 429, invalid messages and gzip on and off. Beside
them, a batch posted by hand with a batch-wide context stores it in each message.

Each test tracks for users of its own; the figures (sent, stored, lost, duplicated) are
printed for the record."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
import requests
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.integration.client.conftest import Producer, Stack, open_stack
from tests.reliability.harness import read_all_stored, wait_for
from tests.services import free_port

WRITE_KEY = "sdk-write-key"
# The consumer stores free-text names ("Order Completed").
EVENT_TYPES = "LOGIN,PAGE_VIEW,*"
PRODUCER_ENV = {"EVENT_TYPES": EVENT_TYPES, "PRODUCER_API_KEYS": WRITE_KEY}


class Sdk(Protocol):
    def track(self, *args: Any, **kwargs: Any) -> Any: ...
    def flush(self) -> None: ...
    def shutdown(self) -> None: ...


@pytest.fixture(scope="module")
def sdk_stack(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with open_stack(
        kafka_bootstrap, redis_url, tmp_path_factory, {"EVENT_TYPES": EVENT_TYPES}
    ) as stack:
        yield stack


@pytest.fixture
def producer(sdk_stack: Stack) -> Iterator[Callable[..., Producer]]:
    started: list[Producer] = []

    def start(port: int | None = None, **env: str) -> Producer:
        p = Producer(sdk_stack, port or free_port(), {**PRODUCER_ENV, **env})
        started.append(p)
        p.wait_up()
        return p

    yield start
    for p in started:
        if p.alive:
            p.sigterm(20)


def segment(host: str, *, gzip: bool, errors: list[Any]) -> SegmentClient:
    return SegmentClient(
        WRITE_KEY, host=host, gzip=gzip, on_error=lambda e, batch: errors.append(e)
    )


def rudder(host: str, *, gzip: bool, errors: list[Any]) -> RudderClient:
    return RudderClient(WRITE_KEY, host=host, gzip=gzip, on_error=lambda e, batch: errors.append(e))


SDKS = {"segment": segment, "rudder": rudder}


def stored_of(stack: Stack, users: set[str], expected: int, timeout: float = 90) -> list[Any]:
    """The stored events of `users` (read through the read API), once `expected` are there
    (or `timeout` passed: the counts then show what is missing)."""
    found: list[Any] = []

    def there() -> bool:
        nonlocal found
        found = [e for e in read_all_stored(stack.consumer.base) if e.get("userId") in users]
        return len(found) >= expected

    with contextlib.suppress(AssertionError):
        wait_for(there, timeout, f"{expected} events stored", every=0.5)
    # A moment more, so that a late duplicate would be seen too.
    time.sleep(1)
    return [e for e in read_all_stored(stack.consumer.base) if e.get("userId") in users]


def figures(sent: dict[str, set[int]], stored: list[Any]) -> dict[str, int]:
    """sent, stored, lost, duplicated, from `sent` (user -> the `n` of each track call)."""
    seen: dict[str, list[int]] = {u: [] for u in sent}
    for event in stored:
        seen[event["userId"]].append(event["payload"]["n"])
    result = {
        "sent": sum(len(v) for v in sent.values()),
        "stored": len(stored),
        "lost": sum(len(sent[u] - set(seen[u])) for u in sent),
        "duplicated": sum(len(seen[u]) - len(set(seen[u])) for u in sent),
    }
    print(f"sdk result: {result}", file=sys.stderr)
    return result


def track_many(client: Sdk, run: str, count: int, users: int = 10) -> dict[str, set[int]]:
    sent: dict[str, set[int]] = {f"{run}-u{u}": set() for u in range(users)}
    for n in range(count):
        user = f"{run}-u{n % users}"
        client.track(user, "Order Completed", {"n": n, "sku": f"s{n % 7}"})
        sent[user].add(n)
    return sent


@pytest.mark.parametrize(("name", "gzip"), [("segment", False), ("rudder", True)])
def test_thousands_of_track_calls_are_stored_once(
    sdk_stack: Stack, producer: Callable[..., Producer], name: str, gzip: bool
) -> None:
    p = producer()
    errors: list[Any] = []
    client = SDKS[name](p.url, gzip=gzip, errors=errors)
    run = f"{name}-{uuid.uuid4().hex[:6]}"
    sent = track_many(client, run, 3000)
    client.flush()
    client.shutdown()
    assert errors == []
    stored = stored_of(sdk_stack, set(sent), 3000)
    result = figures(sent, stored)
    assert result == {"sent": 3000, "stored": 3000, "lost": 0, "duplicated": 0}
    sample = stored[0]
    assert sample["schemaVersion"] == 2 and sample["source"] == "segment-api"
    assert sample["eventType"] == "Order Completed"
    assert set(sample["payload"]) == {"n", "sku"}
    assert sample["context"]["library"]["name"]


def test_a_producer_restart_mid_stream_stores_nothing_twice(
    sdk_stack: Stack, producer: Callable[..., Producer]
) -> None:
    first = producer()
    errors: list[Any] = []
    client = segment(first.url, gzip=True, errors=errors)
    run = f"restart-{uuid.uuid4().hex[:6]}"
    sent: dict[str, set[int]] = {}
    done = threading.Event()

    def send() -> None:
        for n in range(3000):
            user = f"{run}-u{n % 10}"
            client.track(user, "Order Completed", {"n": n})
            sent.setdefault(user, set()).add(n)
            if n % 100 == 0:
                time.sleep(0.02)
        done.set()

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: sum(map(len, sent.values())) > 1000, 30, "a third sent")
    # SIGKILL: batches in flight get no answer, and the SDK sends them again.
    first.sigkill()
    second = producer(port=first.port)
    sender.join(60)
    assert done.is_set()
    client.flush()
    client.shutdown()
    assert second.alive
    stored = stored_of(sdk_stack, set(sent), 3000)
    result = figures(sent, stored)
    assert result == {"sent": 3000, "stored": 3000, "lost": 0, "duplicated": 0}, errors


def test_a_quota_answering_429_loses_nothing(
    sdk_stack: Stack, producer: Callable[..., Producer]
) -> None:
    # 300 a second per worker process (no REDIS_URL: memory counters), 2 workers.
    p = producer(PRODUCER_RATE_LIMIT="300/second")
    errors: list[Any] = []
    client = segment(p.url, gzip=False, errors=errors)
    run = f"quota-{uuid.uuid4().hex[:6]}"
    sent = track_many(client, run, 4000)
    client.flush()
    client.shutdown()
    stored = stored_of(sdk_stack, set(sent), 4000)
    result = figures(sent, stored)
    assert result == {"sent": 4000, "stored": 4000, "lost": 0, "duplicated": 0}, errors
    metrics = requests.get(f"{p.url}/metrics", timeout=10).text
    refused = [
        line for line in metrics.splitlines() if 'route="/v1/batch"' in line and "429" in line
    ]
    assert refused, "the quota never answered 429: the test proved nothing"


def test_invalid_messages_mixed_in_leave_the_valid_ones_stored(
    sdk_stack: Stack, producer: Callable[..., Producer]
) -> None:
    p = producer()
    errors: list[Any] = []
    client = rudder(p.url, gzip=False, errors=errors)
    run = f"mixed-{uuid.uuid4().hex[:6]}"
    sent: dict[str, set[int]] = {}
    for n in range(1000):
        user = f"{run}-u{n % 5}"
        if n % 10 == 3:
            # A tab is outside the free-name characters: this message is invalid.
            client.track(user, "Order\tCompleted", {"n": n})
            continue
        client.track(user, "Order Completed", {"n": n})
        sent.setdefault(user, set()).add(n)
    client.flush()
    client.shutdown()
    assert errors == []  # the SDK saw 200s: it dropped nothing
    stored = stored_of(sdk_stack, set(sent), 900)
    result = figures(sent, stored)
    assert result == {"sent": 900, "stored": 900, "lost": 0, "duplicated": 0}
    metrics = requests.get(f"{p.url}/metrics", timeout=10).text
    assert 'producer_tracking_messages_total{outcome="invalid"} 100.0' in metrics


def test_a_batch_context_is_stored_in_each_message_under_its_own_keys(
    sdk_stack: Stack, producer: Callable[..., Producer]
) -> None:
    # What a sender writing the HTTP API itself may post (the SDKs put context in each
    # message): one context for the whole batch.
    p = producer()
    run = f"ctx-{uuid.uuid4().hex[:6]}"
    user = f"{run}-u0"
    body = {
        "batch": [
            {"type": "track", "messageId": f"{run}-0", "userId": user, "event": "LOGIN"},
            {
                "type": "track",
                "messageId": f"{run}-1",
                "userId": user,
                "event": "LOGIN",
                "context": {"locale": "de-DE", "page": {"path": "/cart"}},
            },
        ],
        "context": {"locale": "fr-FR", "library": {"name": "http-sender", "version": "1"}},
    }
    answer = requests.post(f"{p.url}/v1/batch", json=body, auth=(WRITE_KEY, ""), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2
    stored = {e["eventId"]: e for e in stored_of(sdk_stack, {user}, 2)}
    assert len(stored) == 2
    contexts = sorted((e["context"] for e in stored.values()), key=lambda c: "page" in c)
    library = {"name": "http-sender", "version": "1"}
    assert contexts == [
        {"locale": "fr-FR", "library": library},
        {"locale": "de-DE", "library": library, "page": {"path": "/cart"}},
    ]

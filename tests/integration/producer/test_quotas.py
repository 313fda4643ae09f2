"""PRODUCER_RATE_LIMIT across replicas: two real `producer-service` processes (two gunicorn
workers each) counting in the shared Redis hold one quota between them, and what they
refuse never reaches Kafka. Also: with Redis unreachable the limit fails open to
per-process counting."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from producer_service import create_app
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from tests.integration.producer.conftest import read_topic
from tests.services import free_port, running_producer
from tests.unit.producer.fakes import InMemoryEventPublisher

pytestmark = pytest.mark.integration

LIMIT = 20
GOOD = {"userId": "user-1", "eventType": "LOGIN", "payload": {"page": "/home"}}


@pytest.fixture
def producers(
    kafka_bootstrap: str, topic: str, redis_url: str, redis_prefix: str
) -> Iterator[list[str]]:
    """Two producer processes sharing a `LIMIT`/minute quota in Redis; their base URLs."""
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                running_producer(
                    kafka_bootstrap,
                    topic,
                    wait=False,
                    REDIS_URL=redis_url,
                    PRODUCER_RATE_LIMIT=f"{LIMIT}/minute",
                    PRODUCER_RATE_LIMIT_PREFIX=redis_prefix,
                    PRODUCER_WORKERS="2",
                    PRODUCER_THREADS="4",
                )
            )
            for _ in range(2)
        ]
        for producer in started:
            producer.wait_ready()
        yield [producer.base for producer in started]


def test_two_producers_share_one_quota(
    producers: list[str],
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    # (producer, status, events in the request, eventIds accepted)
    answers: list[tuple[int, int, int, list[str]]] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        with requests.Session() as session:
            for i in range(10):
                which = (n + i) % 2
                size = 1 + (n + i) % 3  # single events and batches of 2 and 3
                if size == 1:
                    r = session.post(f"{producers[which]}/events/generate", json=GOOD, timeout=15)
                    ids = [r.json()["eventId"]] if r.status_code == 201 else []
                else:
                    body = {"events": [{**GOOD, "payload": {"i": j}} for j in range(size)]}
                    r = session.post(f"{producers[which]}/events/batch", json=body, timeout=15)
                    ids = r.json()["eventIds"] if r.status_code == 201 else []
                if r.status_code == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert r.json()["error"]["type"] == "rate_limited"
                with lock:
                    answers.append((which, r.status_code, size, ids))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    statuses = Counter(status for _, status, _, _ in answers)
    assert set(statuses) == {201, 429}, statuses
    accepted = [event_id for _, status, _, ids in answers if status == 201 for event_id in ids]
    # 60 requests asking for 120 events: one quota for both processes admits at most
    # LIMIT, and at least LIMIT - 2 (a batch of 3 may be refused with 2 left).
    assert LIMIT - 2 <= len(accepted) <= LIMIT, answers
    # Each process both accepted and refused: neither kept a quota of its own.
    for which in (0, 1):
        seen = {status for p, status, _, _ in answers if p == which}
        assert seen == {201, 429}, (which, answers)
    # Nothing refused was published: the topic holds exactly the accepted events.
    in_topic = [json.loads(m.value())["eventId"] for m in read_topic(kafka_bootstrap, topic)]
    assert sorted(in_topic) == sorted(accepted)
    # The counters are in Redis, under the configured prefix.
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{redis_prefix}:*"))
    finally:
        client.close()


def test_unreachable_redis_fails_open_to_a_per_process_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = free_port()  # nothing listens there: every Redis call is refused at once
    settings = ProducerSettings(
        common=CommonSettings(kafka_topic="unit-events"),
        rate_limit="3/minute",
        rate_limit_redis_url=f"redis://127.0.0.1:{closed}/0",
    )
    fake = InMemoryEventPublisher()
    client = create_app(settings, publisher=fake).test_client()
    statuses: list[int] = []
    with caplog.at_level(logging.WARNING, logger="flask-limiter"):
        for _ in range(5):
            r: Any = client.post("/events/generate", json=GOOD)
            statuses.append(r.status_code)
    # Intake goes on without Redis, still limited, by this process's own counters.
    assert statuses == [201, 201, 201, 429, 429]
    assert len(fake.records) == 3
    assert any("unreachable" in record.getMessage() for record in caplog.records)

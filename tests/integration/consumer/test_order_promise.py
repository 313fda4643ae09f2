"""The per-user order promise of docs/guarantees.md, end to end: producer app -> Kafka -> worker
-> Redis. Among one user's acknowledged events, each sent after the previous answer, and
among the acknowledged items of one batch, the stored order is the send order."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from consumer_service.config import ConsumerSettings
from consumer_service.storage import PageQuery, RedisEventStore
from producer_service import create_app
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings

from .conftest import WorkerThread, wait_until

USERS = [f"order-user-{i}" for i in range(4)]


@pytest.fixture
def producer(settings: ConsumerSettings) -> Iterator[FlaskClient]:
    app = create_app(ProducerSettings(common=settings.common, ack_timeout_ms=10_000))
    yield app.test_client()
    publisher_of(app).close(5)


def post(client: FlaskClient, path: str, body: Any, **headers: str) -> Any:
    answer = client.post(
        path, data=json.dumps(body), content_type="application/json", headers=headers
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()


def test_sequential_and_batched_events_of_a_user_are_stored_in_send_order(
    settings: ConsumerSettings,
    producer: FlaskClient,
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
) -> None:
    store = make_store(settings)
    sent: dict[str, list[str]] = {user: [] for user in USERS}
    # Interleaved users, each event sent only after the previous answer (one client).
    for n in range(15):
        for user in USERS:
            body = {"userId": user, "eventType": "PRODUCT_VIEW", "payload": {"n": n}}
            sent[user].append(post(producer, "/events/generate", body)["eventId"])
    # One batch holding every user's next events, interleaved: item order is send order.
    items = [
        {"userId": user, "eventType": "LOGIN", "payload": {"n": n}}
        for n in range(15, 30)
        for user in USERS
    ]
    ids = post(producer, "/events/batch", {"events": items})["eventIds"]
    for item, event_id in zip(items, ids, strict=True):
        sent[item["userId"]].append(event_id)
    # Keyed retries of events already acknowledged do not move them.
    for user in USERS:
        body = {"userId": user, "eventType": "LOGOUT", "payload": {"n": 30}}
        first = post(producer, "/events/generate", body, **{"Idempotency-Key": f"k-{user}"})
        again = post(producer, "/events/generate", body, **{"Idempotency-Key": f"k-{user}"})
        assert again["eventId"] == first["eventId"]
        sent[user].append(first["eventId"])

    start_worker(settings)
    start_worker(settings)
    total = sum(len(v) for v in sent.values())
    wait_until(lambda: store.stats()["processed"] == total, 30, f"{total} events stored")
    for user in USERS:
        stored = store.page(PageQuery(user_id=user, limit=1000)).events
        assert [e["eventId"] for e in stored] == sent[user]
        assert [e["payload"]["n"] for e in stored] == list(range(31))

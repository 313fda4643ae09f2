"""Idempotency-Key retries against a real broker, and through a real consumer into Redis:
every event answered 201 is stored once, however its retries are split or ordered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.worker import Worker
from consumer_service.storage import PageQuery, RedisEventStore
from shared.config import CommonSettings
from tests.integration.consumer.conftest import WorkerThread, kafka_dlq, wait_until
from tests.integration.producer.conftest import read_topic

USER = "user-7"
E0, E1, E2 = (
    {"userId": USER, "eventType": "PRODUCT_VIEW", "payload": {"sku": sku, "n": 1}}
    for sku in ("A", "B", "C")
)
LOGIN = {"userId": USER, "eventType": "LOGIN", "payload": {}}
LOGOUT = {"userId": USER, "eventType": "LOGOUT", "payload": {}}


@dataclass
class Answers:
    """The eventIds the API answered, per request of the scenario."""

    batch: list[str]
    alone: list[str]
    reversed: list[str]
    single: str
    login: str
    logout: str

    def every_201(self) -> list[tuple[str, dict[str, Any]]]:
        """(eventId, the event it was answered for), for every event answered 201."""
        return [
            *zip(self.batch, (E0, E1, E2), strict=True),
            *zip(self.alone, (E1,), strict=True),
            *zip(self.reversed, (E2, E1, E0), strict=True),
            (self.single, E1),
            (self.login, LOGIN),
            (self.logout, LOGOUT),
        ]


def _created(response: Any) -> Any:
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def send_scenario(client: FlaskClient) -> Answers:
    """The issue's reproduction: a keyed batch, a retry of its middle item alone, a retry
    in reverse order, the same item through /events/generate; then a LOGIN and a LOGOUT
    under one reused key."""

    def batch(events: list[dict[str, Any]], key: str) -> list[str]:
        body = {"events": events}
        ids: list[str] = _created(
            client.post("/events/batch", json=body, headers={"Idempotency-Key": key})
        )["eventIds"]
        return ids

    def generate(event: dict[str, Any], key: str) -> str:
        answer = client.post("/events/generate", json=event, headers={"Idempotency-Key": key})
        event_id: str = _created(answer)["eventId"]
        return event_id

    answers = Answers(
        batch=batch([E0, E1, E2], "K"),
        alone=batch([E1], "K"),
        reversed=batch([E2, E1, E0], "K"),
        single=generate(E1, "K"),
        login=generate(LOGIN, "K2"),
        logout=generate(LOGOUT, "K2"),
    )
    return answers


# 3 + 1 + 3 + 1 records of E0..E2 under K, a LOGIN and a LOGOUT under K2.
RECORDS_SENT = 10


def test_retries_keep_each_events_id_in_the_topic(
    kafka_client: FlaskClient, kafka_bootstrap: str, topic: str
) -> None:
    answers = send_scenario(kafka_client)
    assert len(set(answers.batch)) == 3
    assert answers.alone == [answers.batch[1]]
    assert answers.reversed == answers.batch[::-1]
    assert answers.single == answers.batch[1]
    assert answers.login != answers.logout

    records = [json.loads(m.value()) for m in read_topic(kafka_bootstrap, topic)]
    assert len(records) == RECORDS_SENT
    # Every record carries the id answered for its own content, whichever request sent it.
    ids_by_content: dict[str, set[str]] = {}
    for r in records:
        content = json.dumps([r["userId"], r["eventType"], r["payload"]], sort_keys=True)
        ids_by_content.setdefault(content, set()).add(r["eventId"])
    expected: dict[str, set[str]] = {}
    for event_id, e in answers.every_201():
        content = json.dumps([e["userId"], e["eventType"], e["payload"]], sort_keys=True)
        expected.setdefault(content, set()).add(event_id)
    assert ids_by_content == expected
    assert all(len(ids) == 1 for ids in expected.values())
    e1_ids = [r["eventId"] for r in records if r["payload"] == E1["payload"]]
    assert e1_ids == [answers.batch[1]] * 4

    # Two identical items under one key would share an id: refused, nothing published.
    refused = kafka_client.post(
        "/events/batch",
        json={"events": [LOGIN, E0, {**E0, "payload": {"n": 1, "sku": "A"}}]},
        headers={"Idempotency-Key": "K3"},
    )
    assert refused.status_code == 422, refused.get_data(as_text=True)
    error = refused.get_json()["error"]
    assert error["type"] == "duplicate_items"
    assert error["items"] == [{"index": 2, "duplicateOf": 1}]
    assert len(read_topic(kafka_bootstrap, topic)) == RECORDS_SENT


@pytest.fixture
def consumer_settings(
    kafka_bootstrap: str, redis_url: str, topic: str, consumer_group: str, redis_prefix: str
) -> ConsumerSettings:
    return ConsumerSettings(
        common=CommonSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_topic=topic,
            kafka_topic_partitions=6,
            redis_url=redis_url,
        ),
        consumer_group=consumer_group,
        redis_prefix=redis_prefix,
        poll_timeout_seconds=0.1,
        session_timeout_ms=6000,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.5,
        redis_timeout_seconds=1.0,
        dlq_flush_timeout_seconds=5.0,
    )


@pytest.fixture
def store(consumer_settings: ConsumerSettings, redis_url: str) -> Iterator[RedisEventStore]:
    store = RedisEventStore.from_url(
        redis_url,
        consumer_settings.redis_prefix,
        consumer_settings.dedup_ttl_seconds,
        timeout_seconds=consumer_settings.redis_timeout_seconds,
    )
    yield store
    store.close()


def test_every_event_answered_201_is_stored_once(
    kafka_client: FlaskClient, consumer_settings: ConsumerSettings, store: RedisEventStore
) -> None:
    answers = send_scenario(kafka_client)
    dlq = kafka_dlq(consumer_settings)
    worker = WorkerThread(Worker(consumer_settings, store, dlq)).start()
    try:
        stats = wait_until(
            lambda: (
                (s := store.stats())["processed"] + s["duplicatesSkipped"] == RECORDS_SENT and s
            ),
            30,
            "every record consumed",
        )
    finally:
        assert worker.stop() == 0
    # Each 201 names a stored event with the content it was answered for, and the five
    # distinct events (E0, E1, E2, LOGIN, LOGOUT) are stored once each.
    for event_id, event in answers.every_201():
        stored = store.get(event_id)
        assert stored is not None, event
        assert {k: stored[k] for k in event} == event, event_id
    assert stats["stored"] == stats["processed"] == 5
    assert stats["duplicatesSkipped"] == RECORDS_SENT - 5
    page = store.page(PageQuery(limit=100, user_id=USER))
    assert sorted(e["eventType"] for e in page.events) == sorted(
        ["PRODUCT_VIEW"] * 3 + ["LOGIN", "LOGOUT"]
    )

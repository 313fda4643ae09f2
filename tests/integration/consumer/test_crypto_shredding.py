"""Crypto-shredding end to end, against the real broker and Redis: the producer seals
payloads, the worker stores them sealed, the read API opens them, an erasure shreds every
copy and a replay of one is dropped as erased."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from confluent_kafka import Message
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from consumer_service.admin.cli import main as admin_main
from consumer_service.api import create_app as create_read_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.shredding import self_check
from consumer_service.pipeline.status import StatusFile
from consumer_service.storage import RedisEventStore
from consumer_service.storage.keys import data_key
from producer_service import create_app as create_producer_app
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings
from producer_service.encryption import self_check as producer_self_check
from shared.config import EncryptionSettings
from shared.payload_crypto import ENVELOPE_FIELD

from ..producer.conftest import read_topic
from .conftest import PrivateRedis, Raw, WorkerThread, produce, wait_until, with_
from .test_service import free_port, service_env
from .test_worker import committed_total, read_dlq

SECRET = "4111-1111-1111-1111"
READER = {"X-API-Key": "reader"}
ERASER = {"X-API-Key": "eraser"}
KEYS = ("eraser events:erase", "reader events:read")


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def master() -> str:
    return f"k1:{new_key()}"


def encryption(keys: str, cache_seconds: float = 1.0) -> EncryptionSettings:
    return EncryptionSettings(payload_encryption_keys=keys, payload_key_cache_seconds=cache_seconds)


@pytest.fixture
def sealed_settings(settings: ConsumerSettings, master: str) -> ConsumerSettings:
    return replace(settings, encryption=encryption(master), api_keys=KEYS)


@pytest.fixture
def make_producer(
    settings: ConsumerSettings, redis_url: str
) -> Iterator[Callable[..., FlaskClient]]:
    apps: list[Flask] = []

    def build(keys: str, cache_seconds: float = 1.0, redis_at: str | None = None) -> FlaskClient:
        producer_settings = ProducerSettings(
            common=settings.common,
            encryption=encryption(keys, cache_seconds),
            rate_limit_redis_url=redis_at or redis_url,
            redis_prefix=settings.redis_prefix,
            ack_timeout_ms=10_000,
        )
        app = create_producer_app(producer_settings)
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        publisher_of(app).close(5)


def post(client: FlaskClient, user: str, n: int) -> dict[str, Any]:
    answer = client.post(
        "/events/generate",
        json={"userId": user, "eventType": "LOGIN", "payload": {"card": SECRET, "n": n}},
    )
    assert answer.status_code == 201, answer.get_json()
    body: dict[str, Any] = answer.get_json()
    # The client's own answer is its plaintext event.
    assert body["payload"] == {"card": SECRET, "n": n}
    return body


def stored_ids(store: RedisEventStore, reader: FlaskClient, user: str) -> list[str]:
    body = reader.get(f"/events/processed?limit=100&userId={quote(user)}", headers=READER)
    return [e["eventId"] for e in body.get_json()["events"]]


def erased_dropped() -> float:
    return REGISTRY.get_sample_value("consumer_erased_dropped_total") or 0.0


def test_payloads_are_sealed_on_kafka_and_in_redis_and_open_for_a_reader(
    sealed_settings: ConsumerSettings,
    master: str,
    make_producer: Callable[..., FlaskClient],
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
) -> None:
    producer = make_producer(master)
    single = post(producer, "ann", 1)
    batch = producer.post(
        "/events/batch",
        json={"events": [{"userId": "bob", "eventType": "LOGIN", "payload": {"card": SECRET}}]},
    )
    assert batch.status_code == 201
    raw = read_topic(
        sealed_settings.common.kafka_bootstrap_servers, sealed_settings.common.kafka_topic
    )
    assert len(raw) == 2
    for message in raw:
        value = message.value()
        assert SECRET.encode() not in value
        record = json.loads(value)
        assert list(record["payload"]) == [ENVELOPE_FIELD]
        # What stays readable: ids, type, time.
        assert record["userId"] in ("ann", "bob") and record["eventType"] == "LOGIN"

    store = make_store(sealed_settings)
    start_worker(sealed_settings, store)
    reader = create_read_app(sealed_settings, store).test_client()
    wait_until(lambda: stored_ids(store, reader, "bob"), 20, "bob's event stored")
    wait_until(lambda: stored_ids(store, reader, "ann"), 20, "ann's event stored")
    # Redis keeps ciphertext: its AOF and backups hold no payload.
    for key in redis_client.scan_iter(match=f"{sealed_settings.redis_prefix}:event:*"):
        assert SECRET.encode() not in redis_client.get(key)
    one = reader.get(f"/events/processed/{single['eventId']}", headers=READER).get_json()
    assert one["payload"] == {"card": SECRET, "n": 1}
    page = reader.get("/events/processed?limit=10", headers=READER).get_json()
    assert [e["payload"]["card"] for e in page["events"]] == [SECRET, SECRET]


def test_after_erasure_a_replay_is_dropped_as_erased_and_new_events_are_stored(
    sealed_settings: ConsumerSettings,
    master: str,
    make_producer: Callable[..., FlaskClient],
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
) -> None:
    producer = make_producer(master, cache_seconds=60)
    before = [post(producer, "ann", n)["eventId"] for n in range(3)]
    post(producer, "bob", 0)
    store = make_store(sealed_settings)
    worker = start_worker(sealed_settings, store)
    reader = create_read_app(sealed_settings, store).test_client()
    wait_until(lambda: len(stored_ids(store, reader, "ann")) == 3, 20, "ann's events stored")
    erased = reader.delete("/users/ann/events", headers=ERASER)
    assert erased.status_code == 200
    assert redis_client.get(data_key(sealed_settings.redis_prefix, "ann")) is None
    worker.stop()

    # The copies in Kafka are ciphertext nobody can open now. A group reset to earliest,
    # or a DLQ replay (the same bytes produced again), drops them as erased: counted,
    # neither stored nor dead-lettered.
    topic = sealed_settings.common.kafka_topic
    copies = [
        m
        for m in read_topic(sealed_settings.common.kafka_bootstrap_servers, topic)
        if json.loads(m.value())["eventId"] in before
    ]
    produce(
        sealed_settings.common.kafka_bootstrap_servers,
        topic,
        [Raw(m.key(), m.value(), list(m.headers() or [])) for m in copies[:1]],
    )
    dropped = erased_dropped()
    reset = with_(sealed_settings, consumer_group=f"{sealed_settings.consumer_group}-reset")
    start_worker(reset, store)
    wait_until(lambda: erased_dropped() - dropped >= 4, 20, "the erased user's records dropped")
    assert erased_dropped() - dropped == 4  # three originals and one replayed copy
    assert stored_ids(store, reader, "ann") == []
    assert read_dlq(reset, 1, timeout=2) == []

    # A producer that cached ann's key before the erasure seals with it until its cache
    # time is up (PAYLOAD_KEY_CACHE_SECONDS, 60 here): such an event is dropped too.
    post(producer, "ann", 9)
    wait_until(lambda: erased_dropped() - dropped >= 5, 20, "the stale-key event dropped")
    # A producer whose cache does not hold the old key makes a new one: stored, readable.
    fresh = make_producer(master)
    after = post(fresh, "ann", 10)["eventId"]
    wait_until(lambda: stored_ids(store, reader, "ann") == [after], 20, "the new event stored")
    event = reader.get(f"/events/processed/{after}", headers=READER).get_json()
    assert event["payload"] == {"card": SECRET, "n": 10}


def test_the_worker_waits_for_redis_before_opening_payloads(
    sealed_settings: ConsumerSettings,
    master: str,
    make_producer: Callable[..., FlaskClient],
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    """Redis down when a batch's data keys are looked up: the worker backs off and commits
    nothing; nothing is dropped as erased or dead-lettered for want of a key; once Redis
    is back every event is stored once and opens."""
    settings = with_(
        sealed_settings,
        redis_timeout_seconds=0.5,
        common=with_(sealed_settings.common, redis_url=private_redis.url),
    )
    producer = make_producer(master, redis_at=private_redis.url)
    posted = {post(producer, f"user-{n % 20}", n)["eventId"] for n in range(200)}
    store = make_store(settings, private_redis.url)
    dropped = erased_dropped()

    # A worker whose key cache is empty, started while Redis is down: the payload step
    # (before any store) is the first to need Redis.
    private_redis.kill()
    status = StatusFile(tmp_path / "status.json")
    worker = start_worker(settings, make_store(settings, private_redis.url), status_file=status)
    wait_until(lambda: (s := status.read()) and s.state == "backing_off", 20, "backing off")
    time.sleep(1.0)  # several retries' worth
    assert committed_total(settings) == 0
    assert erased_dropped() == dropped

    private_redis.start()
    wait_until(lambda: store.stats()["processed"] >= len(posted), 30, "all stored")
    stats = store.stats()
    assert (stats["processed"], stats["stored"], stats["duplicatesSkipped"]) == (200, 200, 0)
    assert erased_dropped() == dropped
    assert read_dlq(settings, 1, timeout=2) == []
    reader = create_read_app(settings, store).test_client()
    for event_id in list(posted)[::17]:
        event = reader.get(f"/events/processed/{event_id}", headers=READER).get_json()
        assert event["payload"]["card"] == SECRET
    wait_until(lambda: committed_total(settings) == 200, 10, "all committed")
    assert worker.stop() == 0


def test_a_wrong_master_key_is_refused_at_start(
    sealed_settings: ConsumerSettings,
    master: str,
    make_producer: Callable[..., FlaskClient],
    redis_url: str,
) -> None:
    assert self_check(sealed_settings)  # the first service stores the check value
    impostor = f"k1:{new_key()}"
    assert not self_check(replace(sealed_settings, encryption=encryption(impostor)))
    producer_settings = ProducerSettings(
        common=sealed_settings.common,
        encryption=encryption(impostor),
        rate_limit_redis_url=redis_url,
        redis_prefix=sealed_settings.redis_prefix,
    )
    problem = producer_self_check(producer_settings)
    assert problem is not None and "'k1' is not the key other services stored" in problem
    # Another id beside the right one passes: rotation adds keys.
    rotated = f"k2:{new_key()},{master}"
    assert self_check(replace(sealed_settings, encryption=encryption(rotated)))


def test_a_record_under_a_master_key_no_longer_configured_is_dead_lettered(
    sealed_settings: ConsumerSettings,
    master: str,
    make_producer: Callable[..., FlaskClient],
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
) -> None:
    post(make_producer(master), "ann", 1)
    post(make_producer(master), "bob", 2)
    # k1 was rotated out before the data keys it wrapped were rewrapped.
    rotated = replace(sealed_settings, encryption=encryption(f"k2:{new_key()}"))
    store = make_store(rotated)
    worker = start_worker(rotated, store)
    letters: list[Message] = read_dlq(rotated, 2)
    assert len(letters) == 2
    for letter in letters:
        headers = dict(letter.headers())
        assert headers["dlq.error.type"] == b"undecryptable"
        assert b"master key id 'k1'" in headers["dlq.error"]
    # Dead letters, not a crash loop: the worker goes on.
    assert worker.exit_code is None
    assert worker.stop() == 0
    # A producer without k1 cannot seal ann's events under her key: 503, nothing sent.
    refused = make_producer(rotated.encryption.payload_encryption_keys).post(
        "/events/generate", json={"userId": "ann", "eventType": "LOGIN", "payload": {}}
    )
    assert refused.status_code == 503
    assert "master key id 'k1'" in refused.get_json()["error"]["message"]


def test_rotation_rewraps_the_data_keys_so_the_old_master_key_can_go(
    sealed_settings: ConsumerSettings,
    master: str,
    make_producer: Callable[..., FlaskClient],
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
    redis_url: str,
) -> None:
    sent = post(make_producer(master), "ann", 1)["eventId"]
    new = f"k2:{new_key()}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": sealed_settings.common.kafka_bootstrap_servers,
        "KAFKA_TOPIC": sealed_settings.common.kafka_topic,
        "REDIS_URL": redis_url,
        "CONSUMER_REDIS_PREFIX": sealed_settings.redis_prefix,
        "PAYLOAD_ENCRYPTION_KEYS": f"{new},{master}",
    }
    out = io.StringIO()
    assert admin_main(["keys", "rewrap"], env, out) == 0
    assert json.loads(out.getvalue()) == {"rewrapped": 1, "current": 0, "unreadable": 0}
    out = io.StringIO()
    assert admin_main(["keys", "rewrap"], env, out) == 0
    assert json.loads(out.getvalue()) == {"rewrapped": 0, "current": 1, "unreadable": 0}
    # The old master key is gone; the record sealed before the rotation still opens.
    only_new = replace(sealed_settings, encryption=encryption(new))
    store = make_store(only_new)
    start_worker(only_new, store)
    reader = create_read_app(only_new, store).test_client()
    wait_until(lambda: stored_ids(store, reader, "ann") == [sent], 20, "the event stored")
    event = reader.get(f"/events/processed/{sent}", headers=READER).get_json()
    assert event["payload"] == {"card": SECRET, "n": 1}


def test_both_services_exit_2_at_start_with_a_wrong_master_key(
    sealed_settings: ConsumerSettings, master: str, redis_url: str
) -> None:
    assert self_check(sealed_settings)  # the deployment's key is on record
    impostor = f"k1:{new_key()}"
    env = service_env(sealed_settings, free_port(), PAYLOAD_ENCRYPTION_KEYS=impostor)
    consumer = subprocess.run(
        [sys.executable, "-m", "consumer_service"], env=env, capture_output=True, timeout=60
    )
    assert consumer.returncode == 2
    assert b"is not the key other services stored under that id" in consumer.stderr
    env |= {"PRODUCER_REDIS_PREFIX": sealed_settings.redis_prefix, "REDIS_URL": redis_url}
    producer = subprocess.run(
        [sys.executable, "-m", "producer_service"], env=env, capture_output=True, timeout=60
    )
    assert producer.returncode == 2
    assert b"is not the key other services stored under that id" in producer.stderr
    assert impostor.encode()[3:] not in consumer.stderr + producer.stderr

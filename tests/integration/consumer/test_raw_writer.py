"""What a client that writes the topic directly, past the producer's validation, can make
the consumer store: records of a type outside EVENT_TYPES, and userIds holding control or
bidirectional-formatting characters, are dead-lettered through the real broker and leave
no key, index or stats field behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from shared.json_codec import compact_json

from .conftest import WorkerThread, make_record, produce, wait_until
from .test_worker import read_dlq

StartWorker = Callable[..., WorkerThread]


def keys_under(redis_url: str, prefix: str) -> set[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return set(client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


def run_until_decided(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    store: RedisEventStore,
    records: list[dict[str, Any]],
    stored: int,
    dead: int,
) -> dict[str, Any]:
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, records)
    start_worker(settings)
    stats: dict[str, Any] = wait_until(
        lambda: (s := store.stats())["processed"] + s["deadLettered"] >= stored + dead and s,
        30,
        f"{stored} stored and {dead} dead-lettered",
    )
    return stats


def test_types_outside_event_types_are_dead_lettered_and_leave_no_keys(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
    redis_url: str,
) -> None:
    store = make_store(settings)
    weird = [make_record("raw-writer", f"WEIRD_TYPE_{i}") for i in range(3)]
    good = make_record("raw-writer", "LOGIN")
    stats = run_until_decided(settings, start_worker, store, [*weird, good], 1, 3)

    assert stats["processed"] == 1
    assert stats["deadLettered"] == 3
    assert stats["deadLetteredByReason"] == {"unknown_event_type": 3}
    assert stats["byEventType"] == {"LOGIN": 1}
    keys = keys_under(redis_url, settings.redis_prefix)
    assert not [k for k in keys if "WEIRD" in k], keys
    assert store.get(good["eventId"]) is not None

    letters = read_dlq(settings, 3)
    # Each dead letter carries the original record.
    assert sorted(m.value() for m in letters) == sorted(compact_json(r) for r in weird)
    assert {dict(m.headers())["dlq.error.type"] for m in letters} == {b"unknown_event_type"}


# A newline (log-line injection), a right-to-left override (text that reads backwards on
# screen), and one of each other kind the rule covers.
HOSTILE_USER_IDS = (
    "mallory\u202e\ngpj.exe",
    "tab\there",
    "del\x7f",
    "nel\x85",
    "isolate\u2066x\u2069",
    "mark\u200f",
    "arabic\u061cmark",
    "line\u2028separator",
)


def test_user_ids_with_control_or_bidi_characters_are_dead_lettered(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
    redis_url: str,
) -> None:
    store = make_store(settings)
    hostile = [make_record(user_id) for user_id in HOSTILE_USER_IDS]
    good = make_record("plain-user")
    stats = run_until_decided(settings, start_worker, store, [*hostile, good], 1, len(hostile))

    assert stats["processed"] == 1
    assert stats["deadLetteredByReason"] == {"invalid_schema": len(hostile)}
    for record in hostile:
        assert store.get(record["eventId"]) is None
    user_keys = {k for k in keys_under(redis_url, settings.redis_prefix) if ":user:" in k}
    assert user_keys == {f"{settings.redis_prefix}:user:plain-user"}
    letters = read_dlq(settings, len(hostile))
    assert len(letters) == len(hostile)
    for msg in letters:
        headers = dict(msg.headers())
        assert headers["dlq.error.type"] == b"invalid_schema"
        assert b"userId" in headers["dlq.error"]

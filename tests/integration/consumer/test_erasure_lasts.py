"""An erasure lasts: real workers on the real Kafka and Redis store nothing of an erased
user's events from before the erasure again - not after the seen marks expired, not on a
group reset to earliest, not on a DLQ replay, not on either of two replicas - while the
user's later events, and everyone else's, are stored as usual.

The dedup window is one second here, so the seen marks are gone when the old records
come back: what drops them is the erasure record alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer_service.config import ConsumerSettings
from consumer_service.storage import PageQuery, RedisEventStore
from shared.events import record_headers
from shared.json_codec import compact_json

from ..admin.helpers import admin, count
from .conftest import WorkerThread, make_record, produce, wait_until, with_

StartWorker = Callable[..., WorkerThread]
PARTITIONS = 6


@pytest.fixture
def short_window(settings: ConsumerSettings) -> ConsumerSettings:
    return with_(settings, dedup_ttl_seconds=1)


def stored_ids(store: RedisEventStore, user: str) -> set[str]:
    page = store.page(PageQuery(limit=1000, user_id=user))
    return {e["eventId"] for e in page.events}


def produce_on(settings: ConsumerSettings, records: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Each (partition, record) on that partition, keyed by its userId: as after a change
    of the partition count, or a raw writer choosing partitions."""
    producer = Producer(
        {"bootstrap.servers": settings.common.kafka_bootstrap_servers, "acks": "all"}
    )
    for partition, record in records:
        producer.produce(
            settings.common.kafka_topic,
            key=record["userId"].encode(),
            value=compact_json(record),
            headers=record_headers(record),
            partition=partition,
        )
    assert producer.flush(15) == 0


def reset_to_earliest(settings: ConsumerSettings) -> None:
    """The group's committed offsets back to 0 on every partition (the group is empty)."""
    client = AdminClient({"bootstrap.servers": settings.common.kafka_bootstrap_servers})
    parts = [TopicPartition(settings.common.kafka_topic, p, 0) for p in range(PARTITIONS)]
    request = ConsumerGroupTopicPartitions(settings.consumer_group, parts)
    for future in client.alter_consumer_group_offsets([request]).values():
        future.result(timeout=15)


def test_a_group_reset_to_earliest_does_not_bring_erased_events_back(
    short_window: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    settings = short_window
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    store = make_store(settings)
    ann = [make_record("ann", payload={"n": n}) for n in range(5)]
    bob = [make_record("bob", payload={"n": n}) for n in range(5)]
    produce(bootstrap, topic, [*ann, *bob])
    worker = start_worker(settings)
    wait_until(lambda: store.stats()["stored"] == 10, 30, "ten events stored")

    assert store.erase_user("ann").deleted == 5
    time.sleep(0.01)  # the user's next event is accepted after the erasure
    new = [make_record("ann", payload={"after": True}) for _ in range(2)]
    produce(bootstrap, topic, new)
    wait_until(lambda: store.stats()["stored"] == 7, 30, "the new events stored")
    worker.stop()

    time.sleep(1.2)  # the seen marks expire
    reset_to_earliest(settings)
    start_worker(settings)
    wait_until(lambda: store.stats()["erasedDropped"] == 5, 30, "the old records dropped")
    # Everything after them was consumed again too: bob's and the new ones.
    wait_until(lambda: store.stats()["processed"] >= 7 + 7, 30, "the rest re-read")
    assert stored_ids(store, "ann") == {r["eventId"] for r in new}
    assert stored_ids(store, "bob") == {r["eventId"] for r in bob}
    assert store.stats()["deadLettered"] == 0


def test_a_dlq_replay_does_not_bring_erased_events_back(
    short_window: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    settings = short_window
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    store = make_store(settings)
    # ann's large events go to the DLQ under a tight size limit; the small ones are stored.
    big = [make_record("ann", payload={"blob": "x" * 400}) for _ in range(2)]
    small = [make_record("ann"), make_record("bob")]
    produce(bootstrap, topic, [*big, *small])
    tight = start_worker(with_(settings, max_message_bytes=256))
    wait_until(lambda: store.stats()["deadLettered"] == 2, 30, "the large ones dead-lettered")
    wait_until(lambda: store.stats()["stored"] == 2, 30, "the small ones stored")
    tight.stop()

    assert store.erase_user("ann").deleted == 1
    time.sleep(1.2)
    start_worker(settings)
    run = admin(settings, "dlq", "replay")
    assert run.code == 0, run.err
    assert "published 2" in run.out
    wait_until(lambda: store.stats()["erasedDropped"] == 2, 30, "the replayed records dropped")
    assert stored_ids(store, "ann") == set()
    assert stored_ids(store, "bob") == {small[1]["eventId"]}
    # Dropped and committed, never dead-lettered again.
    assert count(settings, settings.dlq_topic) == 2
    assert store.stats()["deadLettered"] == 2


def test_two_replicas_both_honour_an_erasure_at_once(
    short_window: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    settings = short_window
    store = make_store(settings)
    one, two = start_worker(settings), start_worker(settings)
    wait_until(
        lambda: one.worker.assigned and two.worker.assigned,
        30,
        "both replicas hold partitions",
    )
    # ann's events on every partition, so each replica meets some of them.
    old = [(p, make_record("ann", payload={"p": p})) for p in range(PARTITIONS)]
    produce_on(settings, old)
    wait_until(lambda: store.stats()["stored"] == PARTITIONS, 30, "ann's events stored")

    assert store.erase_user("ann").deleted == PARTITIONS
    time.sleep(1.2)
    # The same records again on every partition (a replay), and a new one.
    time.sleep(0.01)
    new = make_record("ann", payload={"after": True})
    produce_on(settings, [*old, (0, new)])
    wait_until(lambda: store.stats()["erasedDropped"] == PARTITIONS, 30, "the old records dropped")
    wait_until(lambda: stored_ids(store, "ann") == {new["eventId"]}, 30, "the new one stored")
    held = (one.worker.assigned, two.worker.assigned)
    assert all(held) and len(held[0] | held[1]) == PARTITIONS

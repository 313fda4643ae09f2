"""The worker's pipeline (CONSUMER_PIPELINE) against a real Kafka and Redis: while one
batch is being stored the next is fetched and decided, and up to two stores are on their
way (CONSUMER_STORES_IN_FLIGHT); yet every partition's records are stored in offset
order, an offset is committed only after its batch's store answered, and a rebalance or
a stop waits for the stores in flight before partitions change hands.

The store is the real one, slowed down so that a store is in flight whenever the worker
polls Kafka (which is where rebalances are served)."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.pipeline.worker import EXIT_FATAL, Worker
from consumer_service.storage import (
    BatchResult,
    Chain,
    PageQuery,
    RedisEventStore,
    StoreFenced,
)
from shared.errors import Unavailable
from shared.events import record_headers
from shared.json_codec import compact_json

from .conftest import Raw, WorkerThread, make_record, produce, wait_until, with_
from .test_worker import committed_total, refuse_dead_letters_over

StartWorker = Callable[..., WorkerThread]
PARTITIONS = 6


@dataclass(frozen=True)
class Call:
    """One store_batch call as the store saw it."""

    started: float
    ended: float
    offsets: tuple[tuple[int, int], ...]  # (partition, offset) of each event, in order
    redelivered: int
    # Partitions of the call that its worker no longer held when the store answered.
    left_meanwhile: frozenset[int]


class SlowRecordingStore(RedisEventStore):
    """The real store, each batch `delay` seconds slower, recording every call."""

    delay = 0.0
    owner: Worker | None = None
    # The first attempt of this chained batch waits `fail_delay`, then fails unwritten.
    fail_batch = 0
    fail_delay = 0.0
    # The first attempt of this chained batch waits `slow_delay` more before its script.
    slow_batch = 0
    slow_delay = 0.0

    def setup(self, delay: float) -> SlowRecordingStore:
        self.delay = delay
        self.fenced = 0
        self.failed = 0
        self.slowed = 0
        self.fenced_batches: list[int] = []
        self.calls: list[Call] = []
        self.active = 0
        self.most_active = 0
        # Next offset per partition of the events whose store answered.
        self.answered: dict[int, int] = {}
        self._lock = threading.Lock()
        return self

    def store_batch(
        self,
        events: Sequence[Accepted],
        processed_at: str,
        dead_lettered: Mapping[str, int] | None = None,
        chain: Chain | None = None,
    ) -> BatchResult:
        started = time.monotonic()
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            failing = chain is not None and chain.number == self.fail_batch and not self.failed
            self.failed += failing
            slow = chain is not None and chain.number == self.slow_batch and not self.slowed
            self.slowed += slow
        try:
            if failing:
                time.sleep(self.fail_delay)
                raise Unavailable("this attempt fails before it reaches Redis")
            time.sleep(self.delay + (self.slow_delay if slow else 0.0))
            try:
                result = super().store_batch(events, processed_at, dead_lettered, chain)
            except StoreFenced:
                with self._lock:
                    self.fenced += 1
                    self.fenced_batches.append(chain.number if chain else 0)
                raise
        finally:
            with self._lock:
                self.active -= 1
        owner = self.owner
        held = {p for _, p in owner.assigned} if owner is not None else None
        parts = {ev.partition for ev in events}
        with self._lock:
            for ev in events:
                self.answered[ev.partition] = max(self.answered.get(ev.partition, 0), ev.offset + 1)
            self.calls.append(
                Call(
                    started,
                    time.monotonic(),
                    tuple((ev.partition, ev.offset) for ev in events),
                    len(result.redelivered),
                    frozenset(parts - held) if held is not None else frozenset(),
                )
            )
        return result

    def answered_now(self) -> dict[int, int]:
        with self._lock:
            return dict(self.answered)


def slow_store(settings: ConsumerSettings, redis_url: str, delay: float) -> SlowRecordingStore:
    store = SlowRecordingStore.from_url(
        redis_url, settings.redis_prefix, settings.dedup_ttl_seconds, timeout_seconds=5.0
    )
    assert isinstance(store, SlowRecordingStore)
    return store.setup(delay)


def feed(settings: ConsumerSettings, rounds: int, pause: float) -> list[str]:
    """Produce one record per partition per round, `pause` s apart, so every fetch (and
    so every batch) holds records of every partition. Returns the eventIds."""
    producer = Producer(
        {
            "bootstrap.servers": settings.common.kafka_bootstrap_servers,
            "linger.ms": 0,
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    ids: list[str] = []
    for _ in range(rounds):
        for p in range(PARTITIONS):
            record = make_record(f"user-p{p}")
            ids.append(record["eventId"])
            producer.produce(
                settings.common.kafka_topic,
                key=record["userId"].encode(),
                value=compact_json(record),
                headers=record_headers(record),
                partition=p,
            )
        producer.flush(10)
        time.sleep(pause)
    assert producer.flush(15) == 0
    return ids


def committed_by_partition(consumer: Consumer, topic: str) -> dict[int, int]:
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10)}


def assert_stored_in_offset_order(store: RedisEventStore) -> None:
    """Each partition's events took sequence numbers (the processing order every read
    follows) in the order of their offsets."""
    last: dict[int, int] = {}
    cursor: int | str | None = 0
    seen = 0
    while cursor is not None:
        page = store.page(PageQuery(limit=500, cursor=cursor))
        for event in page.events:  # in processing order
            partition, offset = event["partition"], event["offset"]
            assert offset > last.get(partition, -1), (
                f"partition {partition}: offset {offset} stored after {last[partition]}"
            )
            last[partition] = offset
        seen += len(page.events)
        cursor = page.next_cursor
    assert seen > 0


def assert_stores_in_order(store: SlowRecordingStore, in_flight: int) -> None:
    """At most `in_flight` stores were on their way at once (with one, each started after
    the previous answered), and the records were stored in offset order."""
    assert store.most_active <= in_flight
    if in_flight == 1:
        calls = sorted(store.calls, key=lambda c: c.started)
        for before, after in itertools.pairwise(calls):
            assert before.ended <= after.started, "a store started before the previous answered"
    assert_stored_in_offset_order(store)


@pytest.mark.parametrize(("pipeline", "in_flight"), [(True, 2), (True, 1), (False, 1)])
def test_offsets_are_committed_only_after_their_store_answered_and_stores_run_in_order(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    redis_url: str,
    pipeline: bool,
    in_flight: int,
) -> None:
    settings = with_(settings, batch_size=50, pipeline=pipeline, stores_in_flight=in_flight)
    store = slow_store(settings, redis_url, delay=0.15)
    worker = start_worker(settings, store)
    store.owner = worker.worker
    wait_until(lambda: len(worker.worker.assigned) == PARTITIONS, 20, "partitions assigned")

    # Sample the group's committed offsets while the worker runs; each sample must be
    # covered by the stores that had answered when it was read (they are read after it).
    sampler = Consumer(
        {
            "bootstrap.servers": settings.common.kafka_bootstrap_servers,
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
        }
    )
    ahead: list[tuple[dict[int, int], dict[int, int]]] = []
    samples = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal samples
        while not done.is_set():
            committed = committed_by_partition(sampler, settings.common.kafka_topic)
            answered = store.answered_now()
            samples += 1
            if any(o > answered.get(p, 0) for p, o in committed.items()):
                ahead.append((committed, answered))

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        ids = feed(settings, rounds=40, pause=0.03)
        wait_until(lambda: store.stats()["processed"] == len(ids), 60, "every event stored")
        wait_until(lambda: committed_total(settings) == len(ids), 20, "every offset committed")
    finally:
        done.set()
        watcher.join(15)
        sampler.close()
    assert worker.stop() == 0
    assert samples > 20
    assert not ahead, f"committed before the store answered: {ahead[:3]}"
    assert_stores_in_order(store, in_flight)
    assert sum(c.redelivered for c in store.calls) == 0
    assert {store.get(i) is not None for i in ids} == {True}


def test_a_rebalance_waits_for_the_store_in_flight_and_hands_over_after_it(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    redis_url: str,
    make_store: Callable[..., RedisEventStore],
) -> None:
    settings = with_(settings, batch_size=200)
    first = slow_store(settings, redis_url, delay=0.2)
    second = slow_store(settings, redis_url, delay=0.0)
    a = start_worker(settings, first)
    first.owner = a.worker
    wait_until(lambda: len(a.worker.assigned) == PARTITIONS, 20, "partitions assigned")

    fed: list[str] = []
    feeder = threading.Thread(target=lambda: fed.extend(feed(settings, 80, 0.02)))
    feeder.start()
    wait_until(lambda: len(first.calls) >= 3, 20, "the first worker storing")
    b = start_worker(settings, second)
    second.owner = b.worker
    wait_until(
        lambda: len(a.worker.assigned) == len(b.worker.assigned) == PARTITIONS // 2,
        30,
        "partitions shared",
    )
    feeder.join(30)
    stats = make_store(settings).stats
    wait_until(lambda: stats()["processed"] == len(fed), 60, "every event stored")
    wait_until(lambda: committed_total(settings) == len(fed), 20, "every offset committed")
    assert b.stop() == 0 and a.stop() == 0

    # No store of the first worker was still writing records of a partition it had
    # already handed over: the revoke waited for it.
    assert not [c for c in first.calls if c.left_meanwhile]
    # The new owner started exactly after the last durable batch: no record stored by
    # the first worker was read and offered to Redis again by the second.
    assert sum(c.redelivered for c in first.calls + second.calls) == 0
    assert stats()["processed"] == len(fed) and stats()["duplicatesSkipped"] == 0
    assert_stores_in_order(first, 2)


def test_a_stop_waits_for_the_store_in_flight_and_commits_it(
    settings: ConsumerSettings, start_worker: StartWorker, redis_url: str
) -> None:
    settings = with_(settings, batch_size=20)
    store = slow_store(settings, redis_url, delay=0.5)
    worker = start_worker(settings, store)
    wait_until(lambda: len(worker.worker.assigned) == PARTITIONS, 20, "partitions assigned")
    feeder = threading.Thread(target=lambda: feed(settings, 10, 0.0))
    feeder.start()
    wait_until(lambda: store.active >= 1, 20, "a store in flight")
    feeder.join(30)
    assert worker.stop() == 0
    assert store.active == 0
    # Everything stored is committed, the batch that was in flight at the stop included.
    processed = store.stats()["processed"]
    assert processed > 0
    assert committed_total(settings) == processed


def store_all(
    settings: ConsumerSettings, start_worker: StartWorker, store: SlowRecordingStore, ids: list[str]
) -> None:
    """Run a worker on `store` until every one of `ids` is stored and committed; stop it."""
    worker = start_worker(settings, store)
    store.owner = worker.worker
    wait_until(lambda: store.stats()["processed"] == len(ids), 60, "every event stored")
    wait_until(lambda: committed_total(settings) == len(ids), 20, "every offset committed")
    assert worker.stop() == 0


def test_a_batch_sent_while_the_one_before_fails_waits_for_it_and_order_holds(
    settings: ConsumerSettings, start_worker: StartWorker, redis_url: str
) -> None:
    # Batch 3's first attempt fails after a while; batch 4 is sent meanwhile and reaches
    # Redis first. It must write nothing (FENCED) and go again after batch 3 is stored:
    # stored first, its records would precede batch 3's records of the same partitions.
    settings = with_(settings, batch_size=30, stores_in_flight=2)
    # Fed before the worker starts, so that every fetch finds a full batch waiting: the
    # next batch is sent at once while batch 3 is on its way.
    ids = feed(settings, rounds=40, pause=0.0)
    store = slow_store(settings, redis_url, delay=0.05)
    store.fail_batch = 3
    store.fail_delay = 0.6
    store_all(settings, start_worker, store, ids)
    assert store.failed == 1
    assert_stored_in_offset_order(store)
    assert store.fenced >= 1, "no batch was sent while the failing one was in flight"
    assert store.stats()["duplicatesSkipped"] == 0
    assert {store.get(i) is not None for i in ids} == {True}


def test_a_fenced_batch_is_sent_again_before_the_next_one_is_chained_after_it(
    settings: ConsumerSettings, start_worker: StartWorker, redis_url: str
) -> None:
    # Batch 2's script is slow, so batch 3 reaches Redis first and is fenced. Batch 4 must
    # then be chained after a new attempt of 3, not after the one that is over: chained
    # after that, it is fenced for certain, and so is every batch after it.
    settings = with_(settings, batch_size=20, stores_in_flight=2)
    ids = feed(settings, rounds=40, pause=0.0)  # 12 batches, all waiting
    store = slow_store(settings, redis_url, delay=0.0)
    store.slow_batch = 2
    store.slow_delay = 0.4
    store_all(settings, start_worker, store, ids)
    # Two stores really were on their way at once (records waiting, as under load; a
    # trickle is stored one batch at a time, the worker waiting rather than fetching).
    assert store.most_active == 2
    assert 3 in store.fenced_batches
    assert 4 not in store.fenced_batches, store.fenced_batches
    assert_stored_in_offset_order(store)


def test_a_stored_batch_is_reported_and_committed_when_starting_the_next_one_fails(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Batches A and B (5 events each) are in flight when C, a poison record the DLQ
    # refuses for good, is started: the worker stops. A was stored before C's start
    # failed, so it must still be reported and committed, as B is on the way out.
    caplog.set_level(logging.INFO, logger="consumer_service.pipeline.worker")
    # Too small even for a dead letter of its facts: the one refusal that stops a worker.
    refuse_dead_letters_over(settings, 200)
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    valid = [make_record("user-c") for _ in range(10)]
    produce(bootstrap, topic, [*valid, Raw(b"user-c", b"not json " + b"x" * 5000)])
    settings = with_(settings, batch_size=5, stores_in_flight=2, log_events=True)
    store = slow_store(settings, redis_url, delay=0.3)
    worker = start_worker(settings, store)
    assert worker.join(30) == EXIT_FATAL
    assert len(store.calls) == 2  # A and B; C never reached the store
    logged = [r.__dict__["event_id"] for r in caplog.records if r.getMessage() == "event processed"]
    assert logged == [r["eventId"] for r in valid]
    assert committed_total(settings) == 10

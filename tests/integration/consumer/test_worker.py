"""The worker against a real Kafka and Redis: dedup, dead-lettering, order, and a
consumer group of two sharing (and handing over) the partitions."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from prometheus_client import REGISTRY

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline import processing
from consumer_service.pipeline.dlq import FACTS_MAX_BYTES
from consumer_service.pipeline.status import StatusFile
from consumer_service.pipeline.worker import EXIT_FATAL
from consumer_service.storage import PageQuery, RedisEventStore
from shared.errors import Unavailable
from shared.json_codec import compact_json

from .conftest import Raw, WorkerThread, make_record, produce, wait_until, with_

StartWorker = Callable[..., WorkerThread]


def committed_total(settings: ConsumerSettings) -> int:
    """Sum of the group's committed offsets over the topic's partitions."""
    c = Consumer(
        {
            "bootstrap.servers": settings.common.kafka_bootstrap_servers,
            "group.id": settings.consumer_group,
        }
    )
    try:
        parts = [TopicPartition(settings.common.kafka_topic, p) for p in range(6)]
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()


def read_dlq(settings: ConsumerSettings, expected: int, timeout: float = 20) -> list[Any]:
    c = Consumer(
        {
            "bootstrap.servers": settings.common.kafka_bootstrap_servers,
            "group.id": f"{settings.consumer_group}-dlq-reader",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([settings.dlq_topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        c.close()
    return out


def test_same_event_id_twice_is_stored_once(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    store = make_store(settings)
    first = make_record("alice")
    others = [make_record("alice"), make_record("bob")]
    produce(
        settings.common.kafka_bootstrap_servers,
        settings.common.kafka_topic,
        [first, *others, first],
    )
    start_worker(settings)

    stats = wait_until(
        lambda: (s := store.stats())["processed"] + s["duplicatesSkipped"] == 4 and s,
        20,
        "all four records processed",
    )
    assert stats["processed"] == 3
    assert stats["duplicatesSkipped"] == 1
    assert stats["stored"] == 3
    stored = store.get(first["eventId"])
    assert stored is not None
    assert {k: stored[k] for k in first} == first
    assert stored["offset"] == 0  # the first copy wins
    wait_until(lambda: committed_total(settings) == 4, 10, "offsets committed")


def test_poison_records_go_to_the_dlq_while_good_ones_around_them_are_stored(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    settings = with_(settings, max_message_bytes=2048)
    store = make_store(settings)
    key = b"user-p"  # one key, one partition: the poison sits between good records
    good = [make_record("user-p") for _ in range(4)]
    bad_schema = compact_json({**make_record("user-p"), "eventId": "not-a-uuid"})
    too_big = compact_json(make_record("user-p", payload={"blob": "x" * 3000}))
    items: list[Any] = [
        good[0],
        Raw(key, b"{not json", [("trace", b"t-1")]),
        good[1],
        Raw(key, bad_schema),
        good[2],
        Raw(key, too_big),
        good[3],
    ]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, items)
    start_worker(settings)

    stats = wait_until(
        lambda: (s := store.stats())["processed"] == 4 and s["deadLettered"] == 3 and s,
        20,
        "good stored and poison dead-lettered",
    )
    assert stats["deadLetteredByReason"] == {"invalid_schema": 1, "not_json": 1, "too_large": 1}
    assert [e["eventId"] for e in store.page(PageQuery(user_id="user-p")).events] == [
        g["eventId"] for g in good
    ]
    wait_until(lambda: committed_total(settings) == 7, 10, "poison offsets advanced too")

    letters = read_dlq(settings, 3)
    assert len(letters) == 3
    by_type = {}
    for msg in letters:
        headers = dict(msg.headers())
        by_type[headers["dlq.error.type"].decode()] = (msg, headers)
        assert msg.key() == key
        assert headers["dlq.source.topic"].decode() == settings.common.kafka_topic
        assert headers["dlq.consumer.group"].decode() == settings.consumer_group
        assert headers["dlq.error"]
    msg, headers = by_type["not_json"]
    assert msg.value() == b"{not json"
    assert headers["trace"] == b"t-1"  # original headers kept
    assert headers["dlq.source.offset"] == b"1"
    assert by_type["invalid_schema"][0].value() == bad_schema
    assert by_type["invalid_schema"][1]["dlq.source.offset"] == b"3"
    assert by_type["too_large"][0].value() == too_big
    assert by_type["too_large"][1]["dlq.source.offset"] == b"5"
    source_partitions = {h["dlq.source.partition"] for _, h in by_type.values()}
    assert len(source_partitions) == 1


def test_poison_flood_stops_the_worker_loudly(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    settings = with_(settings, poison_window=20, poison_max_share=0.5)
    store = make_store(settings)
    produce(
        settings.common.kafka_bootstrap_servers,
        settings.common.kafka_topic,
        [Raw(b"k", b"garbage %d" % i) for i in range(100)],
    )
    worker = start_worker(settings)
    assert worker.join(20) == 3
    stats = store.stats()
    assert stats["deadLettered"] < 100  # it did not drain the topic into the DLQ
    assert committed_total(settings) < 100


def original_record(user_id: str, n: int) -> tuple[dict[str, Any], Raw]:
    """A record as the Node/KafkaJS service we replace publishes it: the value is
    JSON.stringify({eventId, userId, eventType, timestamp, payload}), key userId, headers
    eventType and timestamp only, and no schemaVersion anywhere."""
    moment = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {
        "eventId": str(uuid.uuid4()),
        "userId": user_id,
        "eventType": ("LOGIN", "LOGOUT", "PRODUCT_VIEW")[n % 3],
        "timestamp": moment,
        "payload": {"n": n} if n % 2 else {},
    }
    headers = [("eventType", event["eventType"].encode()), ("timestamp", moment.encode())]
    value = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    return event, Raw(user_id.encode(), value, headers)


def test_records_of_the_original_service_are_all_stored_as_version_1(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    # Each of these used to be dead-lettered as invalid_schema, and a
    # topic of them tripped the poison guard (exit 3) on every restart.
    assert (settings.poison_window, settings.poison_max_share) == (200, 0.5)  # the defaults
    store = make_store(settings)
    pairs = [original_record(f"user-{n % 7}", n) for n in range(200)]
    produce(
        settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, [r for _, r in pairs]
    )
    worker = start_worker(settings)

    wait_until(
        lambda: (
            worker.exit_code is not None
            or (s := store.stats())["processed"] + s["deadLettered"] >= 200
        ),
        30,
        "every record decided",
    )
    assert worker.exit_code is None, "the poison guard stopped the worker"
    stats = store.stats()
    assert stats["deadLettered"] == 0
    assert stats["processed"] == stats["stored"] == 200
    wait_until(lambda: committed_total(settings) == 200, 10, "every offset committed")
    assert worker.exit_code is None and not worker.worker.stopping, "the worker still runs"
    for event, _ in pairs[:20]:
        stored = store.get(event["eventId"])
        assert stored is not None
        assert {k: stored[k] for k in (*event, "schemaVersion")} == {**event, "schemaVersion": 1}


def test_one_users_events_come_out_in_produced_order(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    store = make_store(settings)
    users = [f"user-{i}" for i in range(5)]
    records = [make_record(users[n % 5], payload={"n": n}) for n in range(500)]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, records)
    # Two workers, so the users' partitions are processed concurrently by different
    # members; each user's order must still hold.
    start_worker(settings)
    start_worker(settings)
    wait_until(lambda: store.stats()["processed"] == 500, 30, "all stored")
    for user in users:
        got = store.page(PageQuery(user_id=user, limit=1000)).events
        want = [r["eventId"] for r in records if r["userId"] == user]
        assert [e["eventId"] for e in got] == want
        offsets = [e["offset"] for e in got]
        assert offsets == sorted(offsets)


def test_two_workers_split_partitions_and_store_every_event_once_across_a_handover(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
    redis_client: redis.Redis,
) -> None:
    store = make_store(settings)
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    settings = with_(settings, batch_size=50)
    records = [make_record(f"user-{n % 40}", payload={"n": n}) for n in range(3000)]

    a = start_worker(settings)
    b = start_worker(settings)
    wait_until(
        lambda: (
            len(a.worker.assigned) + len(b.worker.assigned) == 6
            and a.worker.assigned
            and b.worker.assigned
        ),
        20,
        "both members assigned",
    )
    assert not (a.worker.assigned & b.worker.assigned)

    # Keep producing while A is stopped mid-stream and B takes over its partitions.
    done = threading.Event()

    def feed() -> None:
        for i in range(0, len(records), 300):
            produce(bootstrap, topic, records[i : i + 300])
            time.sleep(0.05)
        done.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    wait_until(lambda: store.stats()["processed"] >= 600, 30, "A and B both working")
    assert a.stop() == 0
    assert store.stats()["processed"] < len(records), "A must stop mid-stream"
    wait_until(lambda: len(b.worker.assigned) == 6, 20, "B took over every partition")
    feeder.join(30)
    assert done.is_set()

    stats = wait_until(
        lambda: (s := store.stats())["processed"] >= len(records) and s, 40, "all stored"
    )
    assert stats["processed"] == len(records)
    assert stats["duplicatesSkipped"] == 0
    assert stats["stored"] == len(records)
    prefix = settings.redis_prefix
    ids = {m.decode() for m in redis_client.zrange(f"{prefix}:index", 0, -1)}
    assert ids == {r["eventId"] for r in records}
    wait_until(lambda: committed_total(settings) == len(records), 10, "all committed")
    assert b.stop() == 0
    # Each stored copy names the offset it came from: no event came from two records.
    bodies = redis_client.mget([f"{prefix}:event:{r['eventId']}" for r in records])
    origins = {(json.loads(x)["partition"], json.loads(x)["offset"]) for x in bodies if x}
    assert len(origins) == len(records)


def with_payload(raw_payload: bytes, user: str) -> bytes:
    """A record whose payload is `raw_payload`, spliced in as JSON text (so it can hold
    what compact_json would refuse to write)."""
    body = compact_json(make_record(user))
    assert body.count(b'"payload":{}') == 1
    return body.replace(b'"payload":{}', b'"payload":' + raw_payload)


def test_records_that_break_the_parser_or_the_encoder_are_dead_lettered_not_fatal(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    # A deep-nested record used to kill run() with RecursionError before any
    # commit, so every replica taking the partition crashed on it in turn.
    store = make_store(settings)
    key = b"user-q"  # one partition, the bad records between good ones
    good = [make_record("user-q"), make_record("user-q")]
    deep = with_payload(b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", "user-q")
    surrogate = with_payload(b'{"s":"\\ud800"}', "user-q")
    huge_number = with_payload(b'{"n":1e400}', "user-q")
    assert len(deep) < settings.max_message_bytes
    items: list[Any] = [good[0], Raw(key, deep), Raw(key, surrogate), Raw(key, huge_number)]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, [*items, good[1]])
    worker = start_worker(settings)

    wait_until(
        lambda: (s := store.stats())["processed"] == 2 and s["deadLettered"] == 3,
        20,
        "good stored and the three bad records dead-lettered",
    )
    assert [e["eventId"] for e in store.page(PageQuery(user_id="user-q")).events] == [
        g["eventId"] for g in good
    ]
    wait_until(lambda: committed_total(settings) == 5, 10, "every offset committed")
    assert worker.exit_code is None and not worker.worker.stopping, "the worker still runs"

    letters = {dict(m.headers())["dlq.source.offset"]: m for m in read_dlq(settings, 3)}
    assert sorted(letters) == [b"1", b"2", b"3"]
    for offset, value, words in [
        (b"1", deep, "nested"),
        (b"2", surrogate, "surrogate"),
        (b"3", huge_number, "out of range"),
    ]:
        msg = letters[offset]
        headers = dict(msg.headers())
        assert msg.value() == value  # the original bytes, untouched
        assert headers["dlq.error.type"] == b"not_json"
        assert words in headers["dlq.error"].decode("utf-8")
    assert store.stats()["deadLetteredByReason"] == {"not_json": 3}


def test_a_record_whose_decision_raises_is_dead_lettered_as_processing_error(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The safety net: a bug in the rules costs one record, not the worker.
    real_decide = processing.decide

    def buggy_decide(value: bytes | None, *args: Any) -> Any:
        if value == b'{"trigger": "\\ud800"}':
            raise KeyError("\ud800 a bug")  # even its message is not UTF-8
        return real_decide(value, *args)

    monkeypatch.setattr(processing, "decide", buggy_decide)
    store = make_store(settings)
    good = [make_record("user-r"), make_record("user-r")]
    produce(
        settings.common.kafka_bootstrap_servers,
        settings.common.kafka_topic,
        [good[0], Raw(b"user-r", b'{"trigger": "\\ud800"}'), good[1]],
    )
    worker = start_worker(settings)
    wait_until(
        lambda: (s := store.stats())["processed"] == 2 and s["deadLettered"] == 1,
        20,
        "the record that broke the rules dead-lettered, the others stored",
    )
    wait_until(lambda: committed_total(settings) == 3, 10, "every offset committed")
    assert worker.exit_code is None
    (letter,) = read_dlq(settings, 1)
    headers = dict(letter.headers())
    assert headers["dlq.error.type"] == b"processing_error"
    assert "KeyError" in headers["dlq.error"].decode("utf-8")
    logged = [r for r in caplog.records if "deciding a record" in r.getMessage()]
    assert logged and logged[0].exc_info is not None


class FailingStore(RedisEventStore):
    """A real store whose batch write fails with an error nobody planned for."""

    def store_batch(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the store")


def test_an_unexpected_exception_stops_the_worker_as_failed_with_a_traceback(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    redis_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It used to close with exit code 0 and status "stopped".
    caplog.set_level(logging.INFO, logger="consumer_service.pipeline.worker")
    store = FailingStore.from_url(redis_url, settings.redis_prefix, 60)
    status = StatusFile(tmp_path / "status.json")
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, [make_record()])
    try:
        worker = start_worker(settings, store, status_file=status)
        assert worker.join(20) == EXIT_FATAL
    finally:
        store.close()
    final = status.read()
    assert final is not None and final.state == "failed"
    assert "a bug in the store" in final.detail
    errors = [r for r in caplog.records if r.getMessage() == "unexpected error, stopping"]
    assert errors and errors[0].exc_info is not None
    stopped = [r for r in caplog.records if r.getMessage() == "worker stopped"]
    assert stopped[-1].__dict__["exit_code"] == EXIT_FATAL
    assert committed_total(settings) == 0


def refuse_dead_letters_over(settings: ConsumerSettings, max_bytes: int) -> None:
    """Make the DLQ topic refuse, for good, any dead letter over `max_bytes`."""
    admin = AdminClient({"bootstrap.servers": settings.common.kafka_bootstrap_servers})
    entry = ConfigEntry(
        "max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, settings.dlq_topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(10)


def test_a_dead_letter_too_large_for_the_dlq_topic_goes_as_its_facts_alone(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    # A DLQ topic that takes less than the source topic: the broker refuses the whole dead
    # letter, which used to stop the worker on every start. The smallest limit it must
    # have is FACTS_MAX_BYTES.
    refuse_dead_letters_over(settings, FACTS_MAX_BYTES)
    store = make_store(settings)
    value = b"not json " + b"x" * 5000
    good = make_record("k")
    produce(
        settings.common.kafka_bootstrap_servers,
        settings.common.kafka_topic,
        [Raw(b"k", value, [("trace", b"t-1")]), good],
    )
    worker = start_worker(settings, store)
    wait_until(
        lambda: worker.exit_code is not None or store.stats()["processed"] == 1,
        20,
        "the event behind the poison record stored",
    )
    assert worker.exit_code is None, "the worker stopped"
    assert store.stats()["deadLettered"] == 1
    wait_until(lambda: committed_total(settings) == 2, 10, "both offsets committed")
    [letter] = read_dlq(settings, 1)
    assert (letter.key(), letter.value()) == (None, None)
    named = dict(letter.headers())
    assert "trace" not in named
    assert named["dlq.cut"] == b"key,value,headers"
    assert named["dlq.cut.value.bytes"] == str(len(value)).encode()
    assert named["dlq.cut.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert named["dlq.cut.key.sha256"] == hashlib.sha256(b"k").hexdigest().encode()
    assert named["dlq.cut.headers.count"] == b"1"
    assert b"MSG_SIZE_TOO_LARGE" in named["dlq.facts.only"]
    assert named["dlq.error.type"] == b"not_json"
    assert named["dlq.source.offset"] == b"0"


def test_a_dlq_topic_too_small_for_any_dead_letter_stops_the_worker(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Below FACTS_MAX_BYTES no dead letter may fit: a misconfigured DLQ topic, which no
    # retry fixes and which must not lose the record. It used to be retried forever,
    # silently.
    refuse_dead_letters_over(settings, 200)
    store = make_store(settings)
    produce(
        settings.common.kafka_bootstrap_servers,
        settings.common.kafka_topic,
        [Raw(b"k", b"not json")],
    )
    worker = start_worker(settings, store)
    assert worker.join(20) == EXIT_FATAL
    assert committed_total(settings) == 0  # the record waits for a DLQ that takes it
    assert store.stats()["deadLettered"] == 0
    refused = [r for r in caplog.records if "refused a poison record" in r.getMessage()]
    assert refused and "MSG_SIZE_TOO_LARGE" in refused[0].__dict__["error"]


def test_the_per_event_log_line_is_written_only_when_asked_for(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="consumer_service.pipeline.worker")
    store = make_store(settings)
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    quiet = [make_record("user-l") for _ in range(5)]
    produce(bootstrap, topic, quiet)
    worker = start_worker(settings)
    wait_until(lambda: store.stats()["processed"] == 5, 20, "stored")
    assert worker.stop() == 0
    assert not [r for r in caplog.records if r.getMessage() == "event processed"]

    loud = [make_record("user-l") for _ in range(5)]
    produce(bootstrap, topic, loud)
    worker = start_worker(with_(settings, log_events=True))
    wait_until(lambda: store.stats()["processed"] == 10, 20, "stored")
    assert worker.stop() == 0
    lines = [r for r in caplog.records if r.getMessage() == "event processed"]
    assert [r.__dict__["event_id"] for r in lines] == [r["eventId"] for r in loud]
    assert {r.__dict__["user_id"] for r in lines} == {"user-l"}
    assert {r.__dict__["event_type"] for r in lines} == {"LOGIN"}


def test_a_lone_event_is_stored_without_waiting_for_a_batch_to_fill(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    # The worker used to wait up to the poll timeout for `batch_size` records; now it
    # waits for the first one only. With a 5 s timeout the difference is unmistakable.
    settings = with_(settings, poll_timeout_seconds=5.0, batch_size=500)
    store = make_store(settings)
    worker = start_worker(settings)
    wait_until(lambda: len(worker.worker.assigned) == 6, 20, "partitions assigned")
    time.sleep(0.5)  # the worker is inside a long consume() now
    record = make_record("user-lone")
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, [record])
    produced = time.monotonic()
    wait_until(lambda: store.get(record["eventId"]), 10, "stored")
    assert time.monotonic() - produced < 2.5


class ReplyLostOnceStore(RedisEventStore):
    """A real store whose first answer is lost after Redis ran the script, as when the
    connection drops between the script and its reply."""

    lost = False

    def store_batch(self, *args: Any, **kwargs: Any) -> Any:
        result = super().store_batch(*args, **kwargs)
        if not self.lost:
            self.lost = True
            raise Unavailable("the reply was lost")
        return result


def test_events_stored_by_an_attempt_whose_reply_was_lost_are_counted_as_processed(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    redis_url: str,
) -> None:
    before = REGISTRY.get_sample_value("consumer_events_processed_total") or 0.0
    store = ReplyLostOnceStore.from_url(redis_url, settings.redis_prefix, 60)
    records = [make_record("user-c") for _ in range(4)]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, records)
    try:
        worker = start_worker(settings, store)
        wait_until(lambda: committed_total(settings) == 4, 20, "committed after the retry")
        assert worker.stop() == 0
        assert store.lost and store.stats()["processed"] == 4
    finally:
        store.close()
    # The retry finds the events marked seen by its own lost attempt: still processed
    # by this worker, and counted (they used to be skipped as redeliveries).
    after = REGISTRY.get_sample_value("consumer_events_processed_total")
    assert after == before + 4

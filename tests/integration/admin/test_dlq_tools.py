"""`pipeline-admin dlq summary | show | replay` against a real Kafka and Redis: a DLQ
filled by a real Worker or directly with the worker's dlq.* headers; a replay stored once
through a real Worker, twice; what still fails stays in the DLQ and is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from consumer_service.admin.cli import EXIT_KAFKA, EXIT_OK, EXIT_STILL_FAILING, EXIT_USAGE
from consumer_service.admin.record import REPLAY_ATTEMPT
from consumer_service.admin.scan import DlqScan
from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from shared.events import record_headers
from shared.json_codec import compact_json

from ..consumer.conftest import (
    BROKER_SIZED,
    Raw,
    WorkerThread,
    make_record,
    produce,
    wait_until,
    with_,
)
from .helpers import HOUR_MS, admin, count, dead_letter, letter, now_ms, read_all

StartWorker = Callable[..., WorkerThread]


def valid(user: str = "user-1", **extra: Any) -> tuple[dict[str, Any], bytes]:
    record = make_record(user, **extra)
    return record, compact_json(record)


def event_id(msg: Any) -> str:
    return str(json.loads(msg.value())["eventId"])


def admin_groups(settings: ConsumerSettings) -> set[str]:
    client = AdminClient({"bootstrap.servers": settings.common.kafka_bootstrap_servers})
    listed = client.list_consumer_groups().result()
    return {g.group_id for g in listed.valid if g.group_id.startswith("pipeline-admin")}


def test_summary_and_show_of_a_dlq_filled_by_a_real_worker(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    store = make_store(settings)
    bad_schema = [make_record("bob", extra=1) for _ in range(2)]
    items: list[Any] = [
        *(Raw(b"alice", b"garbage %d" % n) for n in range(3)),
        *bad_schema,
        make_record("carol"),
    ]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, items)
    worker = start_worker(settings)
    wait_until(lambda: store.stats()["deadLettered"] == 5, 30, "five records dead-lettered")
    worker.stop()

    groups_before = admin_groups(settings)
    summary = admin(settings, "dlq", "summary")
    assert summary.code == EXIT_OK, summary.err
    lines = summary.out.splitlines()
    assert lines[0] == f"{settings.dlq_topic}: 5 dead-lettered record(s)"
    assert any(line.split() == ["not_json", "3"] for line in lines)
    assert any(line.split() == ["invalid_schema", "2"] for line in lines)
    topic = settings.common.kafka_topic
    by_source = [line.split() for line in lines if line.strip().startswith(f"{topic}:")]
    assert sum(int(n) for _, n in by_source) == 5
    assert len(by_source) == 2  # one key per kind: alice's partition and bob's
    assert any(line.startswith("oldest: ") for line in lines)
    assert any(line.startswith("newest: ") for line in lines)

    show = admin(settings, "dlq", "show", "--reason", "invalid_schema")
    assert show.code == EXIT_OK, show.err
    assert show.out.count("--- ") == 2
    assert show.out.count("dlq.error.type: invalid_schema") == 2
    assert f"dlq.consumer.group: {settings.consumer_group}" in show.out
    for record in bad_schema:
        assert record["eventId"] in show.out
    assert "garbage" not in show.out
    # Reading the DLQ joined no group and committed nothing for one.
    assert admin_groups(settings) == groups_before


def test_summary_counts_by_reason_and_source_partition_with_oldest_and_newest(
    settings: ConsumerSettings,
) -> None:
    t0 = 1_795_081_600_000  # 2026-11-19T09:46:40Z
    letters = [
        letter(b"a", "not_json", partition=1, offset=10),
        letter(b"b", "not_json", partition=1, offset=11, key=b"other"),
        letter(b"c", "too_large", partition=4, offset=7),
        letter(b"d", "invalid_schema", partition=4, offset=8, key=None),
    ]
    dead_letter(settings, letters, [t0 + 2000, t0, t0 + 3000, t0 + 1000])
    run = admin(settings, "dlq", "summary")
    assert run.code == EXIT_OK, run.err
    lines = [line.split() for line in run.out.splitlines()]
    assert ["not_json", "2"] in lines
    assert ["too_large", "1"] in lines
    assert ["invalid_schema", "1"] in lines
    assert ["src:1", "2"] in lines
    assert ["src:4", "2"] in lines
    oldest = next(line for line in run.out.splitlines() if line.startswith("oldest:"))
    newest = next(line for line in run.out.splitlines() if line.startswith("newest:"))
    assert "2026-11-19T09:46:40.000Z" in oldest and "from src:1@11" in oldest
    assert "2026-11-19T09:46:43.000Z" in newest and "from src:4@7" in newest
    assert "too_large" in newest


def test_show_is_safe_for_a_terminal_and_truncates(settings: ConsumerSettings) -> None:
    hostile = b"\x1b[2J\x1b[31mred\x07 \xff\xfe " + "\u202e".encode() + b"x" * 1000
    dead_letter(
        settings,
        [letter(hostile, "not_json", key=b"k\nk"), letter(b"{}"), letter(b"{}")],
    )
    run = admin(settings, "dlq", "show", "--reason", "not_json", "--value-bytes", "40")
    assert run.code == EXIT_OK, run.err
    assert not any(ch in run.out for ch in "\x1b\x07\u202e")
    assert "\\x1b[2J\\x1b[31mred\\x07 \\xff\\xfe \\u202e" in run.out
    assert "key: k\\x0ak" in run.out
    assert f"value ({len(hostile):,} bytes)" in run.out
    assert f"(+{len(hostile) - 40} bytes)" in run.out
    assert "1 record(s) shown" in run.out

    limited = admin(settings, "dlq", "show", "--limit", "2")
    assert limited.out.count("--- ") == 2


def test_replay_after_the_fix_stores_each_event_once_and_leaves_what_still_fails(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    store = make_store(settings)
    # The cause: a size limit too low for these events.
    big = [make_record(f"user-{n}", payload={"blob": "x" * 400}) for n in range(3)]
    small = [make_record(f"user-{n}") for n in range(2)]
    produce(bootstrap, topic, [*big, Raw(b"user-9", b"garbage 1"), *small, Raw(None, b"[")])
    tight = start_worker(with_(settings, max_message_bytes=256))
    wait_until(lambda: store.stats()["deadLettered"] == 5, 30, "big and garbage dead-lettered")
    tight.stop()
    assert store.stats()["processed"] == 2

    # The fix: the default limit, for the worker and for the replay's check.
    worker = start_worker(settings)
    before = count(settings, topic)
    run = admin(settings, "dlq", "replay")
    assert run.code == EXIT_STILL_FAILING, run.err
    assert f"selected 5; published 3 to {topic}" in run.out
    assert "left in the DLQ: 2" in run.out
    assert "still not_json: 2" in run.out
    assert count(settings, topic) == before + 3  # the garbage was not put back
    wait_until(lambda: store.stats()["processed"] == 5, 30, "the replayed events stored")
    for record in big:
        assert store.get(record["eventId"]) is not None

    # What went to the main topic: key, value and original headers, plus the attempt.
    replayed = _replayed(settings)
    assert len(replayed) == 3
    by_id = {r["eventId"]: r for r in big}
    for msg in replayed:
        headers = msg.headers()
        event_id = dict(headers)["eventId"].decode()
        original = by_id[event_id]
        assert msg.key() == original["userId"].encode()
        assert msg.value() == compact_json(original)
        assert headers == [*record_headers(original), (REPLAY_ATTEMPT, b"1")]

    # Twice: published again, stored once.
    again = admin(settings, "dlq", "replay")
    assert again.code == EXIT_STILL_FAILING, again.err
    assert "published 3" in again.out
    wait_until(lambda: store.stats()["duplicatesSkipped"] == 3, 30, "the copies recognised")
    stats = store.stats()
    assert (stats["processed"], stats["stored"], stats["deadLettered"]) == (5, 5, 5)
    assert count(settings, settings.dlq_topic) == 5  # nothing went back to the DLQ
    assert worker.exit_code is None


def test_a_dead_letter_cut_to_fit_is_never_replayed_as_the_original(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    # A valid event, too large for the worker, with a megabyte of headers: its dead
    # letter keeps the value but only some of the headers. Replaying that would publish
    # a record nobody wrote.
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    store = make_store(settings)
    record, value = valid(payload={"blob": "x" * 400})
    headers = [(f"h{i}", b"x" * 104_000) for i in range(10)]
    produce(bootstrap, topic, [Raw(b"user-1", value, headers)], BROKER_SIZED)
    start_worker(with_(settings, max_message_bytes=256))
    wait_until(lambda: store.stats()["deadLettered"] == 1, 30, "dead-lettered")

    show = admin(settings, "dlq", "show")
    assert show.code == EXIT_OK, show.err
    assert "dlq.cut: headers" in show.out
    run = admin(settings, "dlq", "replay")  # with the default limit, the value passes
    assert run.code == EXIT_STILL_FAILING, run.err
    assert f"selected 1; published 0 to {topic}" in run.out
    assert "only part of the original kept: 1" in run.out
    assert "(headers cut); the original is at " in run.out
    assert f"{topic}:" in run.out and "offset 0" in run.out
    assert count(settings, topic) == 1
    assert store.get(record["eventId"]) is None


def _replayed(settings: ConsumerSettings) -> list[Any]:
    return [
        m
        for m in read_all(settings, settings.common.kafka_topic)
        if any(k == REPLAY_ATTEMPT for k, _ in m.headers() or [])
    ]


def test_dry_run_checks_and_counts_but_publishes_nothing(settings: ConsumerSettings) -> None:
    # Records a schema accepts now, and one that still fails.
    dead_letter(settings, [letter(valid()[1]), letter(valid()[1]), letter(b"nope", "not_json")])
    run = admin(settings, "dlq", "replay", "--dry-run")
    assert run.code == EXIT_STILL_FAILING, run.err
    assert "selected 3; would publish 2" in run.out
    assert "still not_json: 1" in run.out
    assert count(settings, settings.common.kafka_topic) == 0


def test_reason_and_since_select_what_is_replayed(settings: ConsumerSettings) -> None:
    now = now_ms()
    records = [valid(f"user-{n}") for n in range(5)]
    reasons = ["too_large", "too_large", "invalid_schema", "invalid_schema", "too_large"]
    stamps = [now - 2 * HOUR_MS, now - 2 * HOUR_MS, now, now, now]
    letters = [letter(v, r) for (_, v), r in zip(records, reasons, strict=True)]
    dead_letter(settings, letters, stamps)

    run = admin(settings, "dlq", "replay", "--reason", "too_large", "--since", "1h")
    assert run.code == EXIT_OK, run.err
    assert "selected 1; published 1" in run.out
    assert [event_id(m) for m in _replayed(settings)] == [records[4][0]["eventId"]]

    run = admin(settings, "dlq", "replay", "--reason", "invalid_schema")
    assert run.code == EXIT_OK, run.err
    assert "selected 2; published 2" in run.out
    wanted = {records[n][0]["eventId"] for n in (2, 3, 4)}
    assert {event_id(m) for m in _replayed(settings)} == wanted


def test_a_record_the_consumer_rejects_again_stops_after_max_attempts(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    # The replay is run with a bigger limit than the worker has (a wrong environment):
    # its check passes, the worker dead-letters the record again, attempt header kept.
    store = make_store(settings)
    big = make_record("user-1", payload={"blob": "x" * 400})
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, [big])
    start_worker(with_(settings, max_message_bytes=256))
    wait_until(lambda: store.stats()["deadLettered"] == 1, 30, "dead-lettered")

    first = admin(settings, "dlq", "replay", "--max-attempts", "1")
    assert first.code == EXIT_OK, first.err
    wait_until(lambda: store.stats()["deadLettered"] == 2, 30, "dead-lettered again")
    letters = read_all(settings, settings.dlq_topic)
    copies = [m for m in letters if (REPLAY_ATTEMPT, b"1") in (m.headers() or [])]
    assert len(copies) == 1
    assert dict(copies[0].headers())["dlq.error.type"] == b"too_large"

    second = admin(settings, "dlq", "replay", "--max-attempts", "1")
    assert second.code == EXIT_STILL_FAILING, second.err
    # The original once more (harmless, deduplicated); the copy not again.
    assert "selected 2; published 1" in second.out
    assert "reached --max-attempts: 1" in second.out


def test_a_scan_reads_only_what_was_there_when_it_started(settings: ConsumerSettings) -> None:
    # What makes a replay unable to re-read records produced while it runs, by itself
    # or by a worker dead-lettering its output.
    dead_letter(settings, [letter(b"%d" % n, key=b"same") for n in range(3)])
    with DlqScan(
        settings.common.kafka_bootstrap_servers, settings.dlq_topic, since_ms=None, timeout=20
    ) as scan:
        assert scan.total == 3
        # Appended after the scan fixed its range, before it fetched anything: the
        # fetches see all six records, and the end of the partition comes after them.
        dead_letter(settings, [letter(b"late %d" % n, key=b"same") for n in range(3)])
        values = [r.value for r in scan]
    assert values == [b"0", b"1", b"2"]


def test_the_console_script_and_its_exit_codes(settings: ConsumerSettings) -> None:
    script = Path(sys.executable).with_name("pipeline-admin")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.common.kafka_bootstrap_servers,
        "KAFKA_TOPIC": "unused",
    }
    dead_letter(settings, [letter(b"x", "not_json")])
    ok = subprocess.run(
        [str(script), "dlq", "summary", "--topic", settings.common.kafka_topic],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == EXIT_OK, ok.stderr
    assert "1 dead-lettered record(s)" in ok.stdout
    assert ok.stderr == ""  # no progress bar when stderr is not a terminal

    missing = admin(settings, "dlq", "summary", "--topic", "no-such-topic-here")
    assert missing.code == EXIT_KAFKA
    assert "no-such-topic-here.dlq does not exist" in missing.err
    down = admin(settings, "dlq", "show", "--bootstrap", "127.0.0.1:1", "--timeout", "1")
    assert down.code == EXIT_KAFKA
    assert "did not answer" in down.err
    bad = admin(settings, "dlq", "replay", "--since", "yesterday")
    assert bad.code == EXIT_USAGE

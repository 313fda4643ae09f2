"""The Kafka dead-letter queue: a full local queue waits for room (or gives up as
Unavailable), every letter it reports sent is on the DLQ topic, and a record at the
broker's size limit is dead-lettered, bounded, without stopping the worker."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.dlq import DeadLetter, KafkaDeadLetterQueue
from consumer_service.pipeline.status import StatusFile
from consumer_service.pipeline.worker import EXIT_OK, EXIT_POISON
from consumer_service.storage import PageQuery, RedisEventStore
from shared.errors import Unavailable
from tests.services import free_port

from .conftest import (
    BROKER_SIZED,
    Raw,
    WorkerThread,
    make_record,
    produce,
    wait_until,
    with_,
)
from .test_worker import committed_total, read_dlq

StartWorker = Callable[..., WorkerThread]
REPO = Path(__file__).resolve().parents[3]

# Room for two records in the producer's local queue: the third produce() of a send
# finds it full.
TINY_QUEUE = {"queue.buffering.max.messages": 2}


def letters(n: int) -> list[DeadLetter]:
    return [
        DeadLetter(b"k", b"garbage %d" % i, (), "not_json", "bad", "src", 0, i) for i in range(n)
    ]


def test_a_full_queue_waits_for_room_and_every_letter_lands(settings: ConsumerSettings) -> None:
    dlq = KafkaDeadLetterQueue(
        settings.common.kafka_bootstrap_servers, settings.dlq_topic, "g", 10.0, TINY_QUEUE
    )
    try:
        dlq.send(letters(10))
    finally:
        dlq.close()
    got = read_dlq(settings, 10)
    assert sorted(int(dict(m.headers())["dlq.source.offset"]) for m in got) == list(range(10))


def test_a_queue_that_stays_full_is_unavailable_after_the_flush_timeout() -> None:
    # The second BufferError (queue still full after one flush, because the
    # broker is away) used to escape send() and kill the worker.
    # Queued records outlive the flush timeout, so a flush cannot make room either.
    config = {**TINY_QUEUE, "message.timeout.ms": 60_000}
    dlq = KafkaDeadLetterQueue("127.0.0.1:1", "nowhere.dlq", "g", 0.5, config)
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="queue stayed full"):
            dlq.send(letters(5))
        assert time.monotonic() - started < 3
    finally:
        dlq.close()


def cut_digest(headers: list[tuple[str, bytes]]) -> str:
    """`dlq.cut.headers.sha256` as docs/consumer.md defines it: SHA-256 over each cut
    header's name and value, each preceded by its length as 4 bytes, big-endian."""
    digest = hashlib.sha256()
    for name, value in headers:
        for part in (name.encode(), value):
            digest.update(len(part).to_bytes(4, "big") + part)
    return digest.hexdigest()


def test_a_record_with_a_megabyte_of_headers_is_dead_lettered_and_the_worker_goes_on(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
) -> None:
    # A record the broker accepts, whose dead letter (its headers plus the dlq.* ones)
    # does not fit: it used to stop every worker that took its partition, exit 1.
    store = make_store(settings)
    huge = Raw(b"user-h", b"notjson", [(f"h{i}", b"x" * 104_000) for i in range(10)])
    good = make_record("user-h")  # same key, same partition: behind the huge one
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    produce(bootstrap, topic, [huge, good], BROKER_SIZED)

    worker = start_worker(settings)
    wait_until(
        lambda: (
            worker.exit_code is not None
            or ((s := store.stats())["processed"] == 1 and s["deadLettered"] == 1)
        ),
        30,
        "the huge record dead-lettered and the event behind it stored",
    )
    assert worker.exit_code is None, "the worker stopped"
    assert store.get(good["eventId"]) is not None
    wait_until(lambda: committed_total(settings) == 2, 10, "both offsets committed")

    [letter] = read_dlq(settings, 1)
    assert (letter.key(), letter.value()) == (b"user-h", b"notjson")
    originals = [(k, v) for k, v in letter.headers() if not k.startswith("dlq.")]
    kept = len(originals)
    assert 0 < kept < 10
    assert originals == huge.headers[:kept]  # a prefix, in order, each header whole
    named = dict(letter.headers())
    assert named["dlq.error.type"] == b"not_json"
    assert named["dlq.cut"] == b"headers"
    assert named["dlq.cut.headers.count"] == str(10 - kept).encode()
    assert named["dlq.cut.headers.bytes"] == str((10 - kept) * (2 + 104_000)).encode()
    assert named["dlq.cut.headers.sha256"] == cut_digest(huge.headers[kept:]).encode()
    assert worker.stop() == EXIT_OK


def test_the_poison_flood_runbook_drains_the_flood_and_moves_on(
    settings: ConsumerSettings,
    start_worker: StartWorker,
    make_store: Callable[..., RedisEventStore],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # docs/consumer.md, "Getting out of a poison flood", step by step.
    assert (settings.poison_window, settings.poison_max_share) == (200, 0.5)  # the defaults
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic
    store = make_store(settings)
    items: list[Any] = []
    good: list[dict[str, Any]] = []
    for n in range(200):
        if n % 4:
            items.append(Raw(f"user-{n % 9}".encode(), b"garbage %d" % n))
        else:
            good.append(make_record(f"user-{n % 9}"))
            items.append(good[-1])
    produce(bootstrap, topic, items)

    # What the operator sees: exit status 3, the ERROR line, and /ready's reason.
    status = StatusFile(tmp_path / "status.json")
    assert start_worker(settings, status_file=status).join(30) == EXIT_POISON
    tripped = [r for r in caplog.records if r.getMessage().startswith("poison limit exceeded")]
    assert tripped and tripped[0].levelno == logging.ERROR
    assert "of the last 200 records were poison" in tripped[0].__dict__["error"]
    assert "Getting out of a poison flood" in tripped[0].__dict__["error"]  # the runbook
    final = status.read()
    assert final is not None and final.state == "failed"
    problem = final.problem(60, final.updated_at)
    assert problem is not None and "records were poison" in problem
    assert committed_total(settings) < 200

    # Restart with CONSUMER_POISON_MAX_SHARE=1: the flood goes to the DLQ, the good
    # records are stored, every offset is committed, and the worker keeps running.
    drain = ConsumerSettings.from_env({"CONSUMER_POISON_MAX_SHARE": "1"}).poison_max_share
    draining = start_worker(with_(settings, poison_max_share=drain))
    stats = wait_until(
        lambda: (
            draining.exit_code is not None
            or ((s := store.stats())["processed"] == 50 and s["deadLettered"] == 150 and s)
        ),
        30,
        "the flood dead-lettered and the good records stored",
    )
    assert draining.exit_code is None
    assert stats == {**stats, "processed": 50, "stored": 50, "deadLettered": 150}
    wait_until(lambda: committed_total(settings) == 200, 10, "every offset committed")
    assert {e["eventId"] for e in store.page(PageQuery(limit=1000)).events} == {
        r["eventId"] for r in good
    }
    letters = read_dlq(settings, 150)
    assert len(letters) == 150
    assert {dict(m.headers())["dlq.error.type"] for m in letters} == {b"not_json"}
    assert draining.stop() == EXIT_OK

    # Restore the setting: a worker with the default guard carries on from there.
    later = [make_record("user-1") for _ in range(5)]
    produce(bootstrap, topic, later)
    restored = start_worker(settings)
    wait_until(lambda: store.stats()["processed"] == 55, 20, "new events stored")
    assert restored.exit_code is None
    assert store.stats()["deadLettered"] == 150


FAKE_SERVICE = """#!{python}
# Stands in for a service under infra/run.sh: answers /ready with 200 for `serve`
# seconds (forever if negative), then exits with `status`.
import http.server, os, sys, threading
serve, status = {serve}, {status}
port = int(os.environ["{port_var}"])
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
if serve:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if serve < 0:
        threading.Event().wait()
    threading.Event().wait(serve)
sys.exit(status)
"""


def run_sh_with(tmp_path: Path, consumer_serves: float, consumer_status: int) -> Any:
    """infra/run.sh in a copy of the repo whose Kafka, Redis and topic scripts are stubs
    (so the shared broker and Redis are never touched) and whose services are fakes."""
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    shutil.copy(REPO / "infra" / "run.sh", root / "infra" / "run.sh")
    for script in ("kafka.sh", "redis.sh"):
        (root / "infra" / script).write_text("#!/bin/sh\nexit 0\n")  # "already running"
        (root / "infra" / script).chmod(0o755)
    (root / "infra" / "topics.py").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    for name, serve, status, port_var in [
        ("producer-service", -1, 0, "PRODUCER_PORT"),
        ("consumer-service", consumer_serves, consumer_status, "CONSUMER_PORT"),
    ]:
        fake = FAKE_SERVICE.format(
            python=sys.executable, serve=serve, status=status, port_var=port_var
        )
        (bin_dir / name).write_text(fake)
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PYTHON": str(bin_dir / "python"),
        "PRODUCER_PORT": str(free_port()),
        "CONSUMER_PORT": str(free_port()),
    }
    return subprocess.run(
        [str(root / "infra" / "run.sh")], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("serves", "status", "run_status", "hint"),
    [
        (2.0, 3, 3, True),  # the guard trips after `make run` said ready
        (0, 3, 1, True),  # ... or while it is still starting
        (2.0, 1, 1, False),  # any other failure gets no poison advice
    ],
)
def test_make_run_points_to_the_runbook_when_the_poison_guard_stops_the_consumer(
    tmp_path: Path, serves: float, status: int, run_status: int, hint: bool
) -> None:
    result = run_sh_with(tmp_path, serves, status)
    assert result.returncode == run_status, result.stderr
    assert f"status {status}" in result.stderr
    assert ("CONSUMER_POISON_MAX_SHARE=1" in result.stderr) is hint
    assert ("Getting out of a poison flood" in result.stderr) is hint

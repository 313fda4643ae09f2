"""`EventClient` with a scripted transport instead of a network: how each answer is
acted on, the queue policy, and the spool."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from activity_client import ClientClosed, EventClient, SpoolError
from activity_client.retry import Backoff
from activity_client.transport import Answer

URL = "http://127.0.0.1:9"


class FakeServer:
    """Answers each POST with `answer(events)`; records (key, [n, ...]) per request."""

    def __init__(self, answer: Callable[[list[dict[str, Any]]], Answer] | None = None) -> None:
        self.answer = answer or (lambda events: Answer(201))
        self.requests: list[tuple[str, list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def post(self, path: str, body: bytes, idempotency_key: str) -> Answer:
        assert path == "/events/batch"
        self.gate.wait(10)
        events = json.loads(body)["events"]
        self.requests.append((idempotency_key, [e["payload"].get("n") for e in events]))
        return self.answer(events)

    def close(self) -> None:
        pass


def make_client(server: FakeServer, **kwargs: Any) -> EventClient:
    kwargs.setdefault("flush_interval", 0.01)
    kwargs.setdefault("backoff", Backoff(base=0.001, cap=0.01))
    client = EventClient(URL, **kwargs)
    for lane in client._lanes:
        lane.transport = server  # type: ignore[assignment]
    return client


def scripted(*answers: Answer) -> Callable[[list[dict[str, Any]]], Answer]:
    """The given answers in turn, then 201s."""
    queue = list(answers)
    return lambda events: queue.pop(0) if queue else Answer(201)


def test_a_batch_keeps_its_key_across_retries_and_goes_before_later_ones() -> None:
    server = FakeServer(
        scripted(Answer(503), Answer(0, error="ConnectionResetError"), Answer(429, 0.02))
    )
    client = make_client(server, max_batch_events=5)
    for n in range(10):
        client.track("u", "LOGIN", {"n": n})
    assert client.flush(5)
    assert [ns for _, ns in server.requests] == [[0, 1, 2, 3, 4]] * 4 + [[5, 6, 7, 8, 9]]
    assert len({key for key, _ in server.requests[:4]}) == 1
    counters = client.counters()
    assert (counters.sent, counters.retries, counters.queued) == (10, 3, 0)
    assert client.close(1)


def test_207_resends_only_the_unacknowledged_items_under_the_same_key() -> None:
    def partial(events: list[dict[str, Any]]) -> Answer:
        items = [{"index": i, "status": 201 if i % 2 else 503} for i in range(len(events))]
        return Answer(207, body={"eventIds": [], "items": items})

    server = FakeServer(scripted(partial(list(range(4)))))
    client = make_client(server, max_batch_events=4)
    for n in range(4):
        client.track("u", "LOGIN", {"n": n})
    assert client.flush(5)
    assert [ns for _, ns in server.requests] == [[0, 1, 2, 3], [0, 2]]
    assert server.requests[0][0] == server.requests[1][0]
    assert client.counters().sent == 4


def test_invalid_items_go_to_on_error_and_the_rest_is_sent() -> None:
    def validate(events: list[dict[str, Any]]) -> Answer:
        bad = [i for i, e in enumerate(events) if e["eventType"] == "BAD"]
        if not bad:
            return Answer(201)
        listed = [{"index": i, "fields": {"eventType": ["no"]}} for i in bad[:2]]
        error = {"type": "validation_error", "message": "m", "items": listed}
        return Answer(400, body={"error": error})

    refused: list[tuple[int, str]] = []
    server = FakeServer(validate)
    client = make_client(
        server,
        max_batch_events=10,
        on_error=lambda events, reason: refused.extend((e["payload"]["n"], reason) for e in events),
    )
    for n in range(10):
        client.track("u", "BAD" if n in (1, 4, 8) else "LOGIN", {"n": n})
    # Only two bad items are listed per answer (as the server caps its list): two rounds.
    assert not client.flush(5)
    assert [n for n, _ in refused] == [1, 4, 8]
    assert refused[0][1].startswith("400 validation_error")
    assert [ns for _, ns in server.requests][-1] == [0, 2, 3, 5, 6, 7, 9]
    assert len({key for key, _ in server.requests}) == 1
    counters = client.counters()
    assert (counters.sent, counters.failed) == (7, 3)
    assert client.flush(1)  # nothing new went wrong since


def test_413_halves_in_order_and_a_single_oversized_event_fails() -> None:
    def limit(events: list[dict[str, Any]]) -> Answer:
        too_big = len(events) > 2 or any(e["payload"]["big"] for e in events)
        return Answer(413) if too_big else Answer(201)

    refused: list[int] = []
    server = FakeServer(limit)
    client = make_client(
        server,
        max_batch_events=8,
        on_error=lambda ev, _: refused.extend(e["payload"]["n"] for e in ev),
    )
    for n in range(8):
        client.track("u", "LOGIN", {"n": n, "big": n == 5})
    client.flush(5)
    sent = [ns for _, ns in server.requests]
    assert refused == [5]
    assert sent[0] == list(range(8))
    # Everything but the oversized event went, in order, each part under the first key.
    assert [n for ns in sent if len(ns) <= 2 and 5 not in ns for n in ns] == [0, 1, 2, 3, 4, 6, 7]
    assert len({key for key, _ in server.requests}) == 1
    # Later batches stay under the size that was refused.
    assert client._max_bytes < 1024 * 1024


def test_422_duplicates_send_the_tail_under_a_new_key() -> None:
    first_key: list[str] = []

    def dup(events: list[dict[str, Any]]) -> Answer:
        if len(events) == 4 and not first_key:
            first_key.append("seen")
            error = {"type": "duplicate_items", "items": [{"index": 2, "duplicateOf": 0}]}
            return Answer(422, body={"error": error})
        return Answer(201)

    server = FakeServer(dup)
    client = make_client(server, max_batch_events=4)
    for n in range(4):
        client.track("u", "LOGIN", {"n": n})
    assert client.flush(5)
    (k1, ns1), (k2, ns2), (k3, ns3) = server.requests
    assert (ns1, ns2, ns3) == ([0, 1, 2, 3], [0, 1], [2, 3])
    assert k2 == k1 and k3 != k1


def test_drop_policy_counts_and_reports() -> None:
    server = FakeServer()
    server.gate.clear()  # the sender hangs in its first request
    dropped: list[tuple[int, str]] = []
    client = make_client(
        server,
        max_queue=3,
        when_full="drop",
        on_drop=lambda event, reason: dropped.append((event["payload"]["n"], reason)),
    )
    assert [client.track("u", "LOGIN", {"n": n}) for n in range(5)] == [True] * 3 + [False] * 2
    assert dropped == [(3, "the queue is full"), (4, "the queue is full")]
    assert client.counters().dropped == 2
    server.gate.set()
    assert not client.flush(5)  # two were dropped
    assert client.counters().sent == 3


def test_block_policy_waits_for_room_then_drops() -> None:
    server = FakeServer()
    server.gate.clear()
    client = make_client(server, max_queue=2, when_full="block", block_timeout=0.2)
    assert client.track("u", "LOGIN", {"n": 0}) and client.track("u", "LOGIN", {"n": 1})
    assert not client.track("u", "LOGIN", {"n": 2})  # no room came within 0.2 s
    threading.Timer(0.1, server.gate.set).start()
    assert client.track("u", "LOGIN", {"n": 3})  # room comes once the server answers
    assert not client.close(5)  # one was dropped
    assert (client.counters().sent, client.counters().dropped) == (3, 1)


def test_close_drops_what_was_not_acknowledged_and_refuses_more() -> None:
    server = FakeServer(lambda events: Answer(503))
    dropped: list[int] = []
    client = make_client(server, on_drop=lambda e, _: dropped.append(e["payload"]["n"]))
    for n in range(3):
        client.track("u", "LOGIN", {"n": n})
    assert not client.close(0.2)
    assert sorted(dropped) == [0, 1, 2] and client.counters().dropped == 3
    with pytest.raises(ClientClosed):
        client.track("u", "LOGIN")


def test_the_spool_keeps_events_and_keys_for_the_next_process(tmp_path: Path) -> None:
    spool = str(tmp_path / "s.db")
    down = FakeServer(lambda events: Answer(503))
    client = make_client(down, spool_path=spool)
    for n in range(20):
        client.track("u", "LOGIN", {"n": n})
    client.track("u", "LOGIN", {"n": 0})  # a repeat: another key
    assert not client.close(0.3)
    assert client.counters().dropped == 0  # spooled, not dropped
    keys_before = {key for key, _ in down.requests}

    up = FakeServer()
    again = make_client(up, spool_path=spool)
    assert again.counters().queued == 21
    assert again.close(5)
    assert [n for _, ns in up.requests for n in ns] == [*range(20), 0]
    assert {key for key, _ in up.requests} >= keys_before
    assert len({key for key, _ in up.requests}) == 2
    empty = make_client(FakeServer(), spool_path=spool)
    assert empty.counters().queued == 0
    empty.close(1)


def test_threads_tracking_during_a_commit_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(FakeServer(lambda events: Answer(503)), spool_path=str(tmp_path / "s"))
    spool = client._spool
    assert spool is not None
    commits: list[int] = []
    writing, release = threading.Event(), threading.Event()
    append = spool.append

    def held_append(events: Any, checkpoint: str | None = None) -> list[int]:
        commits.append(len(events))
        if len(commits) == 1:
            writing.set()
            release.wait(10)
        return append(events, checkpoint)

    monkeypatch.setattr(spool, "append", held_append)
    returned: list[int] = []

    def track(n: int) -> None:
        client.track(f"u{n}", "LOGIN", {"n": n})
        returned.append(n)

    threads = [threading.Thread(target=track, args=(n,)) for n in range(9)]
    threads[0].start()
    assert writing.wait(10)
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 10
    while len(client._commits.open.bodies) < 8 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert returned == []  # none before its transaction committed
    release.set()
    for thread in threads:
        thread.join(10)
    assert commits == [1, 8]  # the eight that waited: one transaction
    assert sorted(returned) == list(range(9))
    assert sorted(json.loads(body)["payload"]["n"] for _, _, body in spool.load()) == [*range(9)]
    client.close(0.1)


class Interrupted(Exception):
    pass


def test_an_interrupted_wait_for_a_commit_raises_after_it_and_wakes_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(FakeServer(lambda events: Answer(503)), spool_path=str(tmp_path / "s"))
    spool = client._spool
    assert spool is not None
    writing, release = threading.Event(), threading.Event()
    append = spool.append

    def held_append(events: Any, checkpoint: str | None = None) -> list[int]:
        if not writing.is_set():
            writing.set()
            release.wait(10)
        return append(events, checkpoint)

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    monkeypatch.setattr(spool, "append", held_append)
    signal.signal(signal.SIGUSR1, interrupt)
    writer = threading.Thread(target=client.track, args=("u0", "LOGIN"))
    writer.start()
    assert writing.wait(10)
    later = threading.Thread(target=client.track, args=("u2", "LOGIN"))

    def meanwhile() -> None:
        while not client._commits.open.waiters:  # the main thread waits in the next group
            time.sleep(0.001)
        later.start()  # and joins that group after it
        while len(client._commits.open.waiters) < 2:
            time.sleep(0.001)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        time.sleep(0.05)
        release.set()

    helper = threading.Thread(target=meanwhile)
    helper.start()
    try:
        with pytest.raises(Interrupted):
            client.track("u1", "LOGIN")
        # Raised only once the transaction holding the event committed.
        assert {json.loads(body)["userId"] for _, _, body in spool.load()} == {"u0", "u1", "u2"}
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        release.set()
        helper.join(10)
    writer.join(10)
    later.join(10)
    assert not later.is_alive()  # woken after the interrupted thread
    client.close(0.1)


def test_a_spool_has_one_owner(tmp_path: Path) -> None:
    spool = str(tmp_path / "s.db")
    first = make_client(FakeServer(), spool_path=spool)
    with pytest.raises(SpoolError, match="in use"):
        make_client(FakeServer(), spool_path=spool)
    first.close(1)


def test_a_full_disk_is_a_clear_error_and_nothing_is_lost(tmp_path: Path) -> None:
    server = FakeServer(lambda events: Answer(503))
    client = make_client(server, spool_path=str(tmp_path / "s.db"))
    assert client._spool is not None
    # SQLite's own size limit fails exactly as a full disk does (SQLITE_FULL).
    client._spool._writer.execute("PRAGMA max_page_count = 8")
    accepted = 0
    with pytest.raises(SpoolError, match="full; the event was not accepted"):
        for n in range(10_000):
            client.track("u", "LOGIN", {"n": n, "pad": "x" * 200})
            accepted += 1
    counters = client.counters()
    assert counters.tracked == accepted and counters.queued == accepted
    client.close(0.1)


def test_users_spread_over_senders_and_each_keeps_its_order() -> None:
    server = FakeServer()
    client = make_client(server, senders=4, max_batch_events=7)
    users = [f"user-{i}" for i in range(20)]
    for n in range(400):
        client.track(users[n % 20], "LOGIN", {"n": n, "u": n % 20})
    assert client.flush(5)
    assert client.close(1)
    lanes = {client._lane_of(user) for user in users}
    assert len(lanes) > 1, "every user in one lane: nothing ran side by side"
    sent = [n for _, ns in server.requests for n in ns]
    assert sorted(sent) == list(range(400))
    for u in range(20):
        mine = [n for n in sent if n % 20 == u]
        assert mine == sorted(mine)


def test_flush_after_close_returns_at_once(tmp_path: Path) -> None:
    client = make_client(FakeServer(lambda events: Answer(503)), spool_path=str(tmp_path / "s"))
    client.track("u", "LOGIN")
    assert not client.close(0.1)
    started = time.monotonic()
    assert not client.flush()
    assert time.monotonic() - started < 1

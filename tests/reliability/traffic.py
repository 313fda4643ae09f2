"""Traffic for the reliability suite: concurrent HTTP clients and a record of every answer.

Each client owns a disjoint set of users and sends one request at a time, so one user's
events go out one after another. Every event carries a unique marker in its payload
(`{"m": "<client>:<n>"}`), so the same client event can be recognised in the store under
any eventId.

Order is judged with the promise of docs/guarantees.md ("Per-user order"): event A must be
stored before event B of the same user when A was answered 201 before B was first sent,
or when both went out in the same request (and were acknowledged there) with A first.
That is encoded as request-sequence keys `(request number, index in the request)`:
`acked_key(A) < sent_key(B)` means A comes first.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from shared.config import DEFAULT_EVENT_TYPES
from shared.events import message_event_id

# A request's outcome: the HTTP status, or "conn" for a connection error (nothing or only
# part of an answer arrived: the client cannot know whether the server acted).
Outcome = int | str
Key = tuple[int, int]

REQUEST_TIMEOUT = 30.0
RETRY_PAUSE = 0.2
GIVE_UP_AFTER = 240.0


@dataclass
class ClientEvent:
    """One event a client meant to send once, and what the producer said about it."""

    marker: str
    client: str
    user: str
    body: dict[str, Any]
    sent_key: Key | None = None
    acked_key: Key | None = None
    acked_at: float | None = None
    # Every eventId a 201 gave for it (a retry must give the same one).
    receipts: list[str] = field(default_factory=list)
    # The record as /events/generate answered it, for re-publishing it as is, and the
    # Idempotency-Key it was first sent with.
    record: dict[str, Any] | None = None
    key: str | None = None
    # Not sent through the HTTP API but produced straight to Kafka.
    direct: bool = False


@dataclass(frozen=True)
class RequestLog:
    client: str
    kind: str
    sent_at: float
    done_at: float
    outcome: Outcome


class Ledger:
    """Everything sent and answered in one scenario; shared by all its clients."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.lock = threading.Lock()
        self.events: dict[str, ClientEvent] = {}
        self.requests: list[RequestLog] = []
        self.unexpected: list[str] = []

    def new_event(self, client: str, n: int, user: str, *, direct: bool = False) -> ClientEvent:
        marker = f"{client}:{n}"
        body = {
            "userId": user,
            "eventType": random.choice(DEFAULT_EVENT_TYPES),
            "payload": {"m": marker, "n": n},
        }
        event = ClientEvent(marker, client, user, body, direct=direct)
        with self.lock:
            self.events[marker] = event
        return event

    def log(self, client: str, kind: str, sent_at: float, outcome: Outcome) -> None:
        with self.lock:
            self.requests.append(RequestLog(client, kind, sent_at, time.monotonic(), outcome))

    def note_unexpected(self, text: str) -> None:
        with self.lock:
            self.unexpected.append(text)

    def acked(
        self, event: ClientEvent, key: Key, event_id: str, record: dict[str, Any] | None = None
    ) -> None:
        with self.lock:
            event.receipts.append(event_id)
            if record is not None and event.record is None:
                event.record = record
            if event.acked_key is None:
                event.acked_key = key
                event.acked_at = time.monotonic()

    def acked_count(self) -> int:
        with self.lock:
            return sum(1 for e in self.events.values() if e.acked_key is not None)

    def acked_records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e.record for e in self.events.values() if e.record is not None]

    def outcomes(self) -> Counter[Outcome]:
        with self.lock:
            return Counter(r.outcome for r in self.requests)


class Pacer:
    """Hands out at most `budget` events at `rate` per second, to any number of threads."""

    def __init__(self, budget: int, rate: float) -> None:
        self.budget = budget
        self.rate = rate
        self.claimed = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def claim(self, n: int, stop: threading.Event) -> int:
        """Up to `n` events (0 once the budget is spent), after waiting for their turn."""
        with self.lock:
            granted = min(n, self.budget - self.claimed)
            due = self.started + self.claimed / self.rate
            self.claimed += granted
        if granted:
            stop.wait(max(0.0, due - time.monotonic()))
        return granted


class HttpClient(threading.Thread):
    """One client: started as a thread, it sends new events until its pacer's budget is
    spent; `send_single`/`send_batch` may also be called directly. Each request is retried
    with the same body and Idempotency-Key until it is answered 201 (503 and connection
    errors are retried; anything else is noted as unexpected)."""

    def __init__(
        self,
        name: str,
        ledger: Ledger,
        base: Callable[[], str],
        stop: threading.Event,
        users: Sequence[str],
        pacer: Pacer | None = None,
        batch_size: int = 0,
        tracking: bool = False,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.ledger = ledger
        self.base = base
        self.pacer = pacer
        self.stop = stop
        self.users = list(users)
        self.batch_size = batch_size
        # Batches go to the tracking API (/v1/batch) as analytics SDKs send them.
        self.tracking = tracking
        self.requests = 0
        self.next_event = 0
        self.session = requests.Session()

    def run(self) -> None:
        try:
            while self.pacer is not None and not self.stop.is_set():
                granted = self.pacer.claim(max(1, self.batch_size), self.stop)
                if granted == 0:
                    return
                events = self.new_events(granted)
                if self.batch_size and self.tracking:
                    self.send_tracking_batch(events)
                elif self.batch_size:
                    self.send_batch(events, f"{self.ledger.run}-{self.name}-r{self.requests}")
                else:
                    self.send_single(events[0])
        except Exception as exc:  # a bug in the client must fail the scenario, not hide
            self.ledger.note_unexpected(f"{self.name} crashed: {exc!r}")
        finally:
            self.session.close()

    def new_events(self, n: int) -> list[ClientEvent]:
        events = []
        for _ in range(n):
            user = self.users[self.next_event % len(self.users)]
            events.append(self.ledger.new_event(self.name, self.next_event, user))
            self.next_event += 1
        return events

    def _post(self, path: str, body: Any, key: str | None) -> tuple[Outcome, Any, float]:
        sent_at = time.monotonic()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        try:
            r = self.session.post(
                f"{self.base()}{path}",
                data=json.dumps(body),
                headers=headers,
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException:
            self.ledger.log(self.name, path, sent_at, "conn")
            return "conn", None, sent_at
        self.ledger.log(self.name, path, sent_at, r.status_code)
        try:
            answer = r.json()
        except ValueError:
            answer = r.text
        return r.status_code, answer, sent_at

    def _mark_sent(self, events: Sequence[ClientEvent]) -> int:
        request = self.requests
        self.requests += 1
        for i, event in enumerate(events):
            if event.sent_key is None:
                event.sent_key = (request, i)
        return request

    def send_single(self, event: ClientEvent, key: str | None = None) -> str | None:
        """POST /events/generate until 201; the eventId, or None when given up."""
        key = key or f"{self.ledger.run}-{event.marker}"
        if event.key is None:
            event.key = key
        give_up = time.monotonic() + GIVE_UP_AFTER
        while not self.stop.is_set() and time.monotonic() < give_up:
            request = self._mark_sent([event])
            outcome, answer, _ = self._post("/events/generate", event.body, key)
            if outcome == 201:
                self.ledger.acked(event, (request, 0), answer["eventId"], answer)
                return str(answer["eventId"])
            if outcome not in (503, "conn"):
                self.ledger.note_unexpected(f"{self.name}: generate answered {outcome}: {answer}")
                return None
            self.stop.wait(RETRY_PAUSE)
        return None

    def send_batch(self, events: Sequence[ClientEvent], key: str) -> list[str] | None:
        """POST /events/batch until every item is acknowledged. A 503, a 207 or a lost
        connection re-sends the whole batch under the same key (a true retry: each item
        keeps its id). The eventIds in order, or None when given up."""
        give_up = time.monotonic() + GIVE_UP_AFTER
        body = {"events": [e.body for e in events]}
        while not self.stop.is_set() and time.monotonic() < give_up:
            request = self._mark_sent(events)
            outcome, answer, _ = self._post("/events/batch", body, key)
            if outcome == 201:
                for i, (event, event_id) in enumerate(zip(events, answer["eventIds"], strict=True)):
                    self.ledger.acked(event, (request, i), event_id)
                return [str(i) for i in answer["eventIds"]]
            if outcome == 207:
                for item in answer["items"]:
                    if item["status"] == 201:
                        i = item["index"]
                        self.ledger.acked(events[i], (request, i), item["eventId"])
            elif outcome not in (503, "conn"):
                self.ledger.note_unexpected(f"{self.name}: batch answered {outcome}: {answer}")
                return None
            self.stop.wait(RETRY_PAUSE)
        return None

    def send_tracking_batch(self, events: Sequence[ClientEvent]) -> list[str] | None:
        """POST /v1/batch, one track message per event (its marker the messageId), until
        answered 200: every message acknowledged. A 503 or a lost connection re-sends the
        same messages; their eventIds follow from the messageIds (an open producer's caller
        is ""), so a retry stores nothing twice. The eventIds, or None when given up."""
        give_up = time.monotonic() + GIVE_UP_AFTER
        body = {
            "batch": [
                {
                    "type": "track",
                    "messageId": e.marker,
                    "userId": e.user,
                    "event": e.body["eventType"],
                    "properties": e.body["payload"],
                }
                for e in events
            ]
        }
        ids = [message_event_id("", e.marker) for e in events]
        while not self.stop.is_set() and time.monotonic() < give_up:
            request = self._mark_sent(events)
            outcome, answer, _ = self._post("/v1/batch", body, None)
            if outcome == 200 and answer.get("accepted") == len(events):
                for i, (event, event_id) in enumerate(zip(events, ids, strict=True)):
                    self.ledger.acked(event, (request, i), event_id)
                return ids
            if outcome not in (503, "conn"):
                self.ledger.note_unexpected(f"{self.name}: /v1/batch answered {outcome}: {answer}")
                return None
            self.stop.wait(RETRY_PAUSE)
        return None


@dataclass
class Recovery:
    """How long the pipeline took to store, on every partition, an event sent after a
    fault: from the fault to the moment the last such probe was readable."""

    label: str
    fault_at: float
    seconds: float | None = None


class Prober(threading.Thread):
    """After each fault, sends one probe event per partition (one batch, one user per
    partition) and waits until each is readable through the untouched replica."""

    def __init__(
        self,
        ledger: Ledger,
        producer_base: Callable[[], str],
        reader_base: str,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="probe", daemon=True)
        self.client = HttpClient("probe", ledger, producer_base, stop, [])
        self.ledger = ledger
        self.reader_base = reader_base
        self.stop = stop
        self.users: list[str] = []
        self.queue: list[Recovery] = []
        self.done: list[Recovery] = []
        self.cond = threading.Condition()
        self.closing = False

    def discover(self, partitions: int, timeout: float = 60) -> None:
        """Find one probe user per partition, from where their first events were stored."""
        by_partition: dict[int, str] = {}
        round_ = 0
        deadline = time.monotonic() + timeout
        while len(by_partition) < partitions:
            assert time.monotonic() < deadline, "probe users do not cover every partition"
            candidates = [f"{self.ledger.run}-probe-u{round_}-{i}" for i in range(4 * partitions)]
            events = [self._event(u) for u in candidates]
            ids = self.client.send_batch(events, f"{self.ledger.run}-probe-d{round_}")
            assert ids is not None, "the pipeline did not accept the probe users' events"
            for user, stored in zip(candidates, self._wait_stored(ids, deadline), strict=True):
                by_partition.setdefault(int(stored["partition"]), user)
            round_ += 1
        self.users = [by_partition[p] for p in sorted(by_partition)]

    def _event(self, user: str) -> ClientEvent:
        n = self.client.next_event
        self.client.next_event += 1
        return self.ledger.new_event("probe", n, user)

    def _wait_stored(self, ids: Sequence[str], deadline: float) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with requests.Session() as session:
            while len(found) < len(ids):
                if time.monotonic() > deadline or self.stop.is_set():
                    raise TimeoutError("probe events not stored in time")
                for event_id in ids:
                    if event_id in found:
                        continue
                    try:
                        r = session.get(
                            f"{self.reader_base}/events/processed/{event_id}", timeout=5
                        )
                    except requests.RequestException:
                        continue
                    if r.status_code == 200:
                        found[event_id] = r.json()
                if len(found) < len(ids):
                    time.sleep(0.05)
        return [found[i] for i in ids]

    def fault(self, label: str) -> Recovery:
        """Note that a fault was injected now; a probe measures the recovery from it."""
        recovery = Recovery(label, time.monotonic())
        with self.cond:
            self.queue.append(recovery)
            self.cond.notify()
        return recovery

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closing:
                    self.cond.wait()
                if not self.queue:
                    return
                recovery = self.queue.pop(0)
            n = len(self.done)
            events = [self._event(u) for u in self.users]
            ids = self.client.send_batch(events, f"{self.ledger.run}-probe-f{n}")
            if ids is not None:
                try:
                    self._wait_stored(ids, time.monotonic() + GIVE_UP_AFTER)
                    recovery.seconds = time.monotonic() - recovery.fault_at
                except TimeoutError:
                    pass
            self.done.append(recovery)

    def finish(self, timeout: float = GIVE_UP_AFTER + 30) -> list[Recovery]:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.join(timeout)
        return self.done


def summarise_outcomes(outcomes: Mapping[Outcome, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items(), key=lambda kv: str(kv[0])))

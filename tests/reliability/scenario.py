"""One reliability scenario from start to verdict: its own topic, consumer group and Redis
prefix; a producer and consumer replicas as real processes; traffic; faults; settling; and
the comparison of every 201 with what an untouched replica's read API returns."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from infra.topics import ensure_topics
from tests.services import free_port

from .harness import (
    PARTITIONS,
    ConsumerReplica,
    KafkaBroker,
    ProducerProcess,
    group_lag,
    read_all_stored,
    stored_total,
)
from .traffic import (
    ClientEvent,
    HttpClient,
    Ledger,
    Pacer,
    Prober,
    Recovery,
    summarise_outcomes,
)

# Share of the events sent one by one through /events/generate; the rest go in batches,
# which the producer takes about twenty times faster.
SINGLE_SHARE = 0.55
SINGLE_CLIENTS = 12
USERS_PER_SINGLE_CLIENT = 4
BATCH_CLIENTS = 2
USERS_PER_BATCH_CLIENT = 10
# Events per second the pacers aim at; a slower machine just takes longer.
TARGET_RATE = 800.0


class RedisTarget(Protocol):
    """What the replicas are pointed at: the suite's Redis or its Redis Cluster."""

    @property
    def url(self) -> str: ...


@dataclass
class Result:
    """One scenario's figures, as in docs/reliability.md."""

    scenario: str
    backend: str = "single"
    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    order_breaks: int = 0
    recovery: list[Recovery] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    passed: bool = False
    logs: Path | None = None
    # eventIds of the acknowledged events not stored, and those a scenario predicted it
    # must lose (a failover without WAIT); anything else lost, or any prediction kept,
    # fails the scenario.
    lost_ids: set[str] = field(default_factory=set)
    expected_lost_ids: set[str] = field(default_factory=set)

    @property
    def worst_recovery(self) -> float | None:
        measured = [r.seconds for r in self.recovery]
        if not measured or any(s is None for s in measured):
            return None
        return max(s for s in measured if s is not None)


def traffic_seconds(events: int) -> float:
    return min(75.0, max(8.0, events / TARGET_RATE))


class Run:
    """A scenario's processes and traffic. Use as a context manager: leaving it stops every
    process it started, whatever happened."""

    def __init__(
        self,
        name: str,
        broker: KafkaBroker,
        redis: RedisTarget,
        events: int,
        work_dir: Path,
        consumer_env: Mapping[str, str] | None = None,
        backend: str = "single",
    ) -> None:
        self.name = name
        self.broker = broker
        self.redis = redis
        self.consumer_env = dict(consumer_env or {})
        self.events = events
        self.duration = traffic_seconds(events)
        tag = uuid.uuid4().hex[:6]
        self.topic = f"rel-{name}-{tag}"
        self.group = f"rel-{name}-{tag}"
        self.prefix = f"rel:{name}:{tag}"
        self.dir = work_dir
        self.ledger = Ledger(f"{name}-{tag}")
        self.stop = threading.Event()
        self.replicas: list[ConsumerReplica] = []
        self.retired: list[ConsumerReplica] = []
        self.producers: list[ProducerProcess] = []
        self.producer_port = free_port()
        self.clients: list[HttpClient] = []
        self.prober: Prober | None = None
        self.reader: ConsumerReplica | None = None
        self.started_at = time.monotonic()
        self.traffic_started = 0.0
        self.result = Result(name, backend, logs=work_dir)

    # processes

    def __enter__(self) -> Run:
        ensure_topics(self.broker.bootstrap, [self.topic, f"{self.topic}.dlq"], PARTITIONS)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        try:
            for client in self.clients:
                client.join(10)
            if self.prober is not None:
                if self.prober.ident is not None:
                    self.prober.finish(5)
                self.prober.client.session.close()
        finally:
            for service in [*self.replicas, *self.producers]:
                if service.alive:
                    service.sigkill()

    @property
    def producer(self) -> ProducerProcess:
        return self.producers[-1]

    def start_producer(self, wait: bool = True) -> ProducerProcess:
        log = self.dir / f"producer-{len(self.producers)}.log"
        producer = ProducerProcess(self.broker.bootstrap, self.topic, self.producer_port, log)
        self.producers.append(producer)
        if wait:
            producer.wait_ready()
        return producer

    def start_replica(self, wait: bool = False) -> ConsumerReplica:
        name = f"replica-{len(self.replicas) + len(self.retired)}"
        replica = ConsumerReplica(
            name,
            self.broker.bootstrap,
            self.topic,
            self.group,
            self.redis.url,
            self.prefix,
            self.dir,
            self.consumer_env,
        )
        self.replicas.append(replica)
        if wait:
            replica.wait_ready()
        return replica

    def kill_replica(self, replica: ConsumerReplica) -> None:
        assert replica is not self.reader, "the reading replica must stay untouched"
        replica.sigkill()
        self.replicas.remove(replica)
        self.retired.append(replica)

    def stop_replica(self, replica: ConsumerReplica) -> None:
        assert replica is not self.reader, "the reading replica must stay untouched"
        was_alive = replica.alive
        if was_alive:
            # A replica that leaves has joined first. On a loaded machine its start can
            # outlast the scenario's step, and a SIGTERM before it takes signals would
            # kill it instead of testing how it leaves.
            replica.wait_ready()
        code = replica.sigterm()
        self.replicas.remove(replica)
        self.retired.append(replica)
        if not was_alive:
            self.result.problems.append(
                f"{replica.name} had stopped on its own (exit {code}):\n{replica.tail()}"
            )
        elif code != 0:
            self.result.problems.append(f"{replica.name} exited {code} on SIGTERM")

    def start(self, replicas: int = 3) -> None:
        """Producer and `replicas` replicas up, the first one the untouched reader; probe
        users found for every partition."""
        self.start_producer(wait=False)
        for _ in range(replicas):
            self.start_replica()
        self.producer.wait_ready()
        for replica in self.replicas:
            replica.wait_ready()
        self.reader = self.replicas[0]
        self.prober = Prober(self.ledger, lambda: self.producer.base, self.reader.base, self.stop)
        self.prober.discover(PARTITIONS)
        self.prober.start()

    # traffic

    def start_traffic(self, tracking: bool = False) -> None:
        """Start the clients. `tracking`: the last batch client posts to the tracking
        API's /v1/batch instead of /events/batch."""
        single = round(self.events * SINGLE_SHARE)
        batch_size = 50 if self.events >= 20_000 else 20
        single_pacer = Pacer(single, single / self.duration)
        batch_pacer = Pacer(self.events - single, (self.events - single) / self.duration)
        run = self.ledger.run
        for c in range(SINGLE_CLIENTS):
            users = [f"{run}-s{c}-u{u}" for u in range(USERS_PER_SINGLE_CLIENT)]
            self.clients.append(self._client(f"s{c}", single_pacer, users))
        for c in range(BATCH_CLIENTS):
            users = [f"{run}-b{c}-u{u}" for u in range(USERS_PER_BATCH_CLIENT)]
            via_tracking = tracking and c == BATCH_CLIENTS - 1
            name = f"t{c}" if via_tracking else f"b{c}"
            self.clients.append(self._client(name, batch_pacer, users, batch_size, via_tracking))
        self.traffic_started = time.monotonic()
        for client in self.clients:
            client.start()

    def _client(
        self,
        name: str,
        pacer: Pacer,
        users: Sequence[str],
        batch_size: int = 0,
        tracking: bool = False,
    ) -> HttpClient:
        return HttpClient(
            name,
            self.ledger,
            lambda: self.producer.base,
            self.stop,
            users,
            pacer,
            batch_size,
            tracking,
        )

    def at(self, fraction: float) -> None:
        """Wait until `fraction` of the planned traffic time has passed."""
        due = self.traffic_started + fraction * self.duration
        time.sleep(max(0.0, due - time.monotonic()))

    def fault(self, label: str) -> None:
        assert self.prober is not None
        self.prober.fault(label)

    def wait_traffic(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for client in self.clients:
            client.join(max(0.1, deadline - time.monotonic()))
            assert not client.is_alive(), f"client {client.name} did not finish"

    # verdict

    def settle(self, timeout: float = 180, stuck_after: float = 30) -> None:
        """Wait until the group has committed every record and the stored count is still.

        A lag that stays put for `stuck_after` s while nothing more is stored is reported
        at once: the records are stored but their offsets are not being committed."""
        assert self.reader is not None
        deadline = time.monotonic() + timeout
        last: tuple[int | None, int | None] = (None, None)
        still_since = time.monotonic()
        while True:
            lag = group_lag(self.broker.bootstrap, self.topic, self.group)
            total = stored_total(self.reader.base)
            now = time.monotonic()
            if (lag, total) != last:
                last, still_since = (lag, total), now
            if lag == 0 and total is not None and now - still_since >= 1.0:
                return
            stuck = lag is not None and total is not None and now - still_since >= stuck_after
            if stuck or now > deadline:
                self.result.problems.append(
                    f"did not settle: consumer group lag {lag} (stored {total}, unchanged for "
                    f"{now - still_since:.0f} s)"
                )
                return
            time.sleep(0.25)

    def finish(self, check_alive: bool = True) -> Result:
        """Traffic done, probes done, system settled: compare and fill in the result."""
        self.wait_traffic()
        assert self.prober is not None and self.reader is not None
        self.result.recovery = self.prober.finish()
        self.settle()
        if check_alive:
            for replica in self.replicas:
                if not replica.alive:
                    self.result.problems.append(
                        f"{replica.name} stopped on its own (exit {replica.proc.returncode}):\n"
                        f"{replica.tail()}"
                    )
        stored = read_all_stored(self.reader.base)
        compare(self.ledger, stored, self.result)
        self.result.notes.append(traffic_summary(self.ledger))
        self.result.seconds = time.monotonic() - self.started_at
        if self.ledger.unexpected:
            self.result.problems.extend(self.ledger.unexpected[:20])
        return self.result


def traffic_summary(ledger: Ledger) -> str:
    paths = {"s": 0, "b": 0, "other": 0}
    for event in ledger.events.values():
        if event.sent_key is not None:
            kind = (
                event.client[0]
                if event.client[0] in "sb" and event.client[1:].isdigit()
                else "other"
            )
            paths[kind] += 1
    return (
        f"events sent one by one through /events/generate: {paths['s']:,}, in batches through "
        f"/events/batch: {paths['b']:,}, others (probes, keyed retries, records produced "
        f"straight to Kafka): {paths['other']:,}; answers: {summarise_outcomes(ledger.outcomes())}"
    )


def compare(ledger: Ledger, stored: Sequence[dict[str, Any]], result: Result) -> None:
    """Every acknowledged event against the store (in processing order):

    * lost: a 201 whose eventId does not lead to this very event in the store;
    * duplicated: a client event stored more than once (under one id or several);
    * order breaks: per user, an event stored before one that was acknowledged before it
      was even sent (see tests/reliability/traffic.py).
    """
    position: dict[str, int] = {}
    copies: dict[str, list[str]] = defaultdict(list)
    id_repeats = 0
    for i, event in enumerate(stored):
        event_id = str(event["eventId"])
        if event_id in position:
            id_repeats += 1
        position[event_id] = i
        payload = event.get("payload")
        marker = payload.get("m") if isinstance(payload, dict) else None
        if isinstance(marker, str):
            copies[marker].append(event_id)

    events = list(ledger.events.values())
    acked = [e for e in events if e.acked_key is not None]
    result.sent = sum(1 for e in events if e.sent_key is not None)
    result.acknowledged = len(acked)
    result.stored = len(stored)
    result.duplicated = id_repeats + sum(len(ids) - 1 for ids in copies.values() if len(ids) > 1)

    def holds(event: ClientEvent, event_id: str) -> bool:
        if event_id not in position:
            return False
        payload = stored[position[event_id]].get("payload")
        return isinstance(payload, dict) and payload.get("m") == event.marker

    lost = [e for e in acked if not all(holds(e, r) for r in e.receipts)]
    result.lost = len(lost)
    result.lost_ids = {r for e in lost for r in e.receipts}
    # A prediction may name records no client saw acknowledged (a 503ed attempt that Kafka
    # wrote anyway): only acknowledged ones count.
    result.expected_lost_ids &= {r for e in acked for r in e.receipts}
    kept = result.expected_lost_ids - result.lost_ids
    changed = [e for e in acked if len(set(e.receipts)) > 1]
    if changed:
        result.problems.append(
            f"{len(changed)} events got different eventIds on retries, e.g. "
            f"{changed[0].marker}: {sorted(set(changed[0].receipts))}"
        )
    unforeseen = [e for e in lost if not set(e.receipts) <= result.expected_lost_ids]
    if unforeseen:
        sample = unforeseen[0]
        elsewhere = copies.get(sample.marker, [])
        result.problems.append(
            f"{len(unforeseen)} acknowledged events are not stored under their eventId, e.g. "
            f"{sample.marker} acknowledged as {sample.receipts}, stored as {elsewhere}"
        )
    if kept:
        result.problems.append(
            f"{len(kept)} acknowledged events predicted lost are stored, e.g. {min(kept)}"
        )

    by_user: dict[str, list[ClientEvent]] = defaultdict(list)
    for e in acked:
        if e.receipts and e.receipts[0] in position and e not in lost:
            by_user[e.user].append(e)
    breaks = 0
    example = ""
    for user_events in by_user.values():
        user_events.sort(key=lambda e: position[e.receipts[0]])
        latest_sent: tuple[int, int] = (-1, -1)
        latest: ClientEvent | None = None
        for e in user_events:
            assert e.acked_key is not None and e.sent_key is not None
            if e.acked_key < latest_sent:
                breaks += 1
                if not example and latest is not None:
                    example = f"{e.marker} (acknowledged {e.acked_key}) after {latest.marker}"
            if e.sent_key > latest_sent:
                latest_sent, latest = e.sent_key, e
    result.order_breaks = breaks
    if breaks:
        result.problems.append(f"{breaks} per-user order breaks, e.g. {example}")


def check(result: Result, extra: Callable[[], list[str]] | None = None) -> None:
    """Mark the result and fail the test with everything that went wrong."""
    problems = list(result.problems)
    if extra is not None:
        problems.extend(extra())
    for name in ("duplicated", "order_breaks"):
        if getattr(result, name):
            problems.append(f"{name} = {getattr(result, name)}")
    if result.lost_ids != result.expected_lost_ids:
        problems.append(f"lost = {result.lost}, predicted {len(result.expected_lost_ids)}")
    if result.acknowledged == 0:
        problems.append("nothing was acknowledged: the scenario proved nothing")
    if result.worst_recovery is None:
        problems.append("a probe after a fault was never stored")
    result.passed = not problems
    if problems:
        problems.append(f"process logs: {result.logs}")
    assert not problems, "\n".join(problems)

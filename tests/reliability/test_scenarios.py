"""The reliability scenarios: faults injected into real processes under traffic;
afterwards every 201 must be stored exactly once, in per-user order (an erased user's
events from before the erasure: never).

Those whose faults reach the store also run against a Redis Cluster: consumer
replicas killed (redelivery meets the cluster's claims), erasures while one is killed
(the erasure record in every partition), duplicates (dedup across slots),
and Redis killed, which on a cluster is a shard killed and AOF-restarted. Plus a master
killed mid-stream and its replica promoted, without and with WAIT, whose loss is
predicted exactly (tests/reliability/cluster_faults.py). Replicas joining and leaving,
poison records, the broker and the producer exercise nothing the cluster changes.

Sizes come from RELIABILITY_EVENTS and RELIABILITY_CLUSTER_EVENTS
(tests/reliability/conftest.py).
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from shared.events import HEADER_EVENT_TYPE, HEADER_TIMESTAMP, utc_timestamp
from shared.json_codec import compact_json
from tests.clusterharness import LocalRedisCluster
from tests.integration.consumer.conftest import (
    BROKER_MAX_MESSAGE_BYTES,
    BROKER_SIZED,
    Raw,
    produce,
)
from tests.integration.producer.conftest import read_topic

from . import cluster_faults
from .harness import KafkaBroker, RedisServer, read_all_stored
from .scenario import RedisTarget, Result, Run, check
from .traffic import ClientEvent, HttpClient, Key, Outcome, summarise_outcomes

pytestmark = pytest.mark.reliability


MakeRun = Callable[..., Run]
ON_BOTH = pytest.mark.parametrize("backend", ["single", "cluster"], indirect=True)
ON_CLUSTER = pytest.mark.parametrize("backend", ["cluster"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The suite's one Redis ("single") unless a test is parametrized with "cluster"."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def make_run(
    request: pytest.FixtureRequest,
    backend: str,
    private_kafka: KafkaBroker,
    events: int,
    events_on_cluster: int,
    report: list[Result],
    work_dir: Path,
) -> Iterator[MakeRun]:
    """Builds a scenario's Run, on the suite's Redis or its Redis Cluster as `backend`
    says, and enters its result in the report before anything can fail, so a failed
    scenario still shows its figures. `make(name, wait_replicas=N)` sets the consumers'
    CONSUMER_REDIS_WAIT_REPLICAS on a cluster."""
    target: RedisTarget
    if backend == "cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("private_cluster")
        target = cluster
    else:
        target = request.getfixturevalue("private_redis")

    def make(name: str, wait_replicas: int = 0) -> Run:
        env: dict[str, str] = {}
        size = events
        if backend == "cluster":
            name = f"cluster-{name}"
            env["CONSUMER_REDIS_MODE"] = "cluster"
            env["CONSUMER_REDIS_WAIT_REPLICAS"] = str(wait_replicas)
            size = events_on_cluster
        (work_dir / name).mkdir()
        run = Run(name, private_kafka, target, size, work_dir / name, env, backend)
        report.append(run.result)
        return run

    yield make
    # A scenario that failed half-way must not leave the suite's servers down for the next.
    if isinstance(target, RedisServer) and target.proc is None:
        target.start()
    if isinstance(target, LocalRedisCluster):
        cluster_faults.heal(target)
    if not private_kafka.answers():
        private_kafka.start()


@ON_BOTH
def test_consumer_replicas_sigkilled_repeatedly(make_run: MakeRun) -> None:
    with make_run("consumer-sigkill") as run:
        run.start(replicas=3)
        run.start_traffic()
        _, b, c = run.replicas
        run.at(0.15)
        run.kill_replica(b)
        run.fault("replica B SIGKILLed")
        run.at(0.3)
        b2 = run.start_replica()
        run.at(0.45)
        run.kill_replica(c)
        run.fault("replica C SIGKILLed")
        run.at(0.6)
        run.kill_replica(b2)
        run.fault("restarted replica B SIGKILLed again, only the reader left")
        run.at(0.75)
        run.start_replica()
        run.start_replica()
        result = run.finish()
    check(result)


def test_replicas_join_and_leave_under_traffic(make_run: MakeRun) -> None:
    with make_run("replicas-join-leave") as run:
        run.start(replicas=1)
        run.start_traffic()
        run.at(0.1)
        b = run.start_replica()
        run.fault("replica B joins")
        run.at(0.25)
        c = run.start_replica()
        run.fault("replica C joins")
        run.at(0.4)
        run.stop_replica(b)
        run.fault("replica B leaves (SIGTERM)")
        run.at(0.55)
        run.start_replica()
        run.fault("replica D joins")
        run.at(0.7)
        run.stop_replica(c)
        run.fault("replica C leaves (SIGTERM)")
        result = run.finish()
    check(result)


def test_redis_killed_and_restarted(make_run: MakeRun, private_redis: RedisServer) -> None:
    with make_run("redis-restart") as run:
        run.start(replicas=3)
        run.start_traffic()
        run.at(0.2)
        private_redis.kill()
        run.fault("Redis SIGKILLed, restarted 2 s later")
        time.sleep(2)
        private_redis.start()
        run.at(0.6)
        private_redis.shutdown()
        run.fault("Redis shut down cleanly, restarted 1 s later")
        time.sleep(1)
        private_redis.start()
        result = run.finish()
    check(result)


@ON_CLUSTER
def test_cluster_shard_killed_and_restarted(
    make_run: MakeRun, private_cluster: LocalRedisCluster
) -> None:
    """Scenario 3 on a cluster. With replicas, a lone killed master is not restarted but
    replaced (the failover scenario below); the fault that leaves the slots without any
    copy until the AOF is read back is a whole shard, master and replica, going down."""
    with make_run("redis-restart") as run:
        run.start(replicas=3)
        run.start_traffic()
        run.at(0.2)
        cluster_faults.kill_and_restart_shard(private_cluster, run.prefix, 2.0, run.fault)
        result = run.finish()
    check(result)


@ON_CLUSTER
@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["without-wait", "with-wait"])
def test_cluster_master_killed_mid_stream_replica_promoted(
    make_run: MakeRun, private_cluster: LocalRedisCluster, work_dir: Path, wait_replicas: int
) -> None:
    """Without WAIT exactly the predicted events are lost (acknowledged by the killed
    master alone and committed), at least one; with WAIT none, and at least one batch
    was refused for want of a replica's acknowledgement (else WAIT was never put to the
    test: its consumers stop writing to a master at the first refusal, so the master may
    hold nothing alone). Either way nothing is duplicated and what is stored keeps
    per-user order."""
    name = "failover-wait" if wait_replicas else "failover"
    with make_run(name, wait_replicas=wait_replicas) as run:
        run.start(replicas=3)
        run.start_traffic()
        run.at(0.3)
        facts = cluster_faults.kill_master_mid_stream(
            run, private_cluster, work_dir / run.name, run.fault
        )
        run.result.expected_lost_ids = facts.predicted_lost
        predicted = len(facts.predicted_lost)
        result = run.finish()

    def as_predicted() -> list[str]:
        refusals = f"of {facts.master} acknowledged the batch within"
        refused = sum(
            r.log_path.read_text(errors="replace").count(refusals)
            for r in [*run.replicas, *run.retired]
        )
        result.notes.append(facts.describe())
        result.notes.append(
            f"lost {result.lost} acknowledged events; predicted {len(result.expected_lost_ids)}; "
            f"batch attempts refused for want of a replica's acknowledgement: {refused}"
        )
        problems = []
        if wait_replicas and predicted:
            problems.append(f"with WAIT, {predicted} events were committed on the master alone")
        if wait_replicas and not refused:
            problems.append("with WAIT no batch was refused: WAIT was never put to the test")
        if not wait_replicas and not result.expected_lost_ids:
            problems.append("without WAIT nothing acknowledged was at risk: proved nothing")
        return problems

    check(result, as_predicted)


def test_broker_killed_and_restarted(make_run: MakeRun, private_kafka: KafkaBroker) -> None:
    with make_run("broker-sigkill") as run:
        run.start(replicas=3)
        run.start_traffic()
        run.at(0.2)
        private_kafka.kill()
        killed_at = time.monotonic()
        run.fault("broker SIGKILLed, restarted 2 s later")
        time.sleep(2)
        private_kafka.start()
        back_at = time.monotonic()
        result = run.finish()

    def outage_answers() -> list[str]:
        requests = run.ledger.requests
        in_outage = [r for r in requests if killed_at <= r.done_at and r.sent_at <= back_at]
        unavailable = [r for r in requests if r.outcome == 503]
        # A request sent up to an ack timeout before the kill may 503; after the restart,
        # the producer reconnects within librdkafka's backoff (at most 10 s).
        outside = [r for r in unavailable if not killed_at - 6 <= r.sent_at <= back_at + 10]
        result.notes.append(
            f"broker down {back_at - killed_at:.1f} s; answers to requests during the outage: "
            f"{summarise_outcomes(_count(r.outcome for r in in_outage))}"
        )
        problems = []
        if not unavailable:
            problems.append("no 503 while the broker was down: the outage was not seen")
        if outside:
            problems.append(f"{len(outside)} answers 503 outside the outage")
        conn = [r for r in requests if r.outcome == "conn"]
        if conn:
            problems.append(f"{len(conn)} requests lost their connection to the producer")
        return problems

    check(result, outage_answers)


@ON_BOTH
def test_duplicates_are_stored_once(make_run: MakeRun, private_kafka: KafkaBroker) -> None:
    with make_run("duplicates") as run:
        run.start(replicas=3)
        run.start_traffic()
        # Keyed batches re-sent as subsets, reordered, and item by item through
        # /events/generate; plus a new single event under "<key>:0", which a batch item's
        # id once collided with. Each round sends 6 copies.
        keyed = HttpClient(
            "k",
            run.ledger,
            lambda: run.producer.base,
            run.stop,
            [f"{run.ledger.run}-k-u{u}" for u in range(3)],
        )
        rounds = max(3, run.events // 400)
        rounds_done: list[int] = []

        def keyed_retries() -> None:
            for n in range(rounds):
                if run.stop.is_set():
                    return
                key = f"{run.ledger.run}-k-{n}"
                items = keyed.new_events(6)
                keyed.send_batch(items, key)
                keyed.send_batch([items[4], items[1]], key)
                keyed.send_batch([items[5], items[3], items[0]], key)
                keyed.send_single(items[2], key)
                (fresh,) = keyed.new_events(1)
                keyed.send_single(fresh, f"{key}:0")
                rounds_done.append(n)
                time.sleep(run.duration / rounds / 2)

        retrier = threading.Thread(target=keyed_retries, name="keyed-retries", daemon=True)
        run.at(0.1)
        retrier.start()

        run.at(0.3)
        records = run.ledger.acked_records()
        republished = records[:: max(1, len(records) // max(50, run.events // 20))]
        produce(private_kafka.bootstrap, run.topic, republished)
        run.fault(f"{len(republished)} acknowledged records re-published straight to Kafka")

        run.at(0.5)
        resend = HttpClient("again", run.ledger, lambda: run.producer.base, run.stop, [])
        with run.ledger.lock:
            acked_singles = [e for e in run.ledger.events.values() if e.record is not None]
        sample = acked_singles[:: max(1, len(acked_singles) // max(50, run.events // 40))]
        for event in sample:
            resend.send_single(event, event.key)
        resend.session.close()
        run.fault(f"{len(sample)} acknowledged single events sent again with their key")
        retrier.join(run.duration * 4)
        keyed.session.close()
        assert not retrier.is_alive(), "the keyed retries did not finish"
        result = run.finish()
        stats = _stats(run)

    def duplicates_seen() -> list[str]:
        skipped = int(stats["duplicatesSkipped"])
        copies = len(republished) + len(sample) + 6 * len(rounds_done)
        result.notes.append(
            f"copies sent on purpose: {copies} ({len(republished)} re-published records, "
            f"{len(sample)} single retries, {len(rounds_done)} keyed batches re-sent as "
            f"subsets and item by item); the consumer skipped {skipped} duplicates"
        )
        if skipped < copies:
            return [f"the consumer skipped {skipped} duplicates, fewer than the {copies} sent"]
        return []

    check(result, duplicates_seen)


@ON_BOTH
def test_erasures_while_traffic_flows_and_a_replica_is_sigkilled(
    make_run: MakeRun, private_kafka: KafkaBroker
) -> None:
    with make_run("erasure") as run:
        run.start(replicas=3)
        run.start_traffic()
        _, b, _ = run.replicas
        # Users of the one-by-one clients: each answer holds the event's timestamp.
        erased = [f"{run.ledger.run}-s0-u0", f"{run.ledger.run}-s5-u1"]
        cutoffs: dict[str, str] = {}
        run.at(0.3)
        run.kill_replica(b)
        cutoffs[erased[0]] = _erase(run, erased[0])
        run.fault("replica B SIGKILLed, a user erased at once")
        run.at(0.5)
        cutoffs[erased[1]] = _erase(run, erased[1])
        run.fault("a second user erased")
        run.at(0.6)
        # Their acknowledged events from before the erasures, re-published straight to
        # Kafka: as they were (what a DLQ replay or a group reset brings back), and under
        # a fresh eventId (as after the dedup window, when no seen mark or claim is left).
        replayed = [
            e.record
            for e in _events_of(run, erased)
            if e.record is not None and e.record["timestamp"] <= cutoffs[e.user]
        ]
        fresh = [{**r, "eventId": str(uuid.uuid4())} for r in replayed]
        produce(private_kafka.bootstrap, run.topic, [*replayed, *fresh])
        run.fault(f"{len(replayed)} of their erased records re-published, twice")
        run.at(0.7)
        run.start_replica()
        run.wait_traffic()
        # Their events from before the erasure must not be stored: out of the ledger
        # that finish() holds the store to. Those after it stay in, as everyone's.
        before = _set_aside(run, cutoffs)
        result = run.finish()
        stored = read_all_stored(run.reader.base) if run.reader else []
        stats = _stats(run)

    def erasures_last() -> list[str]:
        kept = [
            e for e in stored if e["userId"] in cutoffs and e["timestamp"] <= cutoffs[e["userId"]]
        ]
        after = sum(1 for e in stored if e["userId"] in cutoffs)
        result.notes.append(
            f"erased {len(cutoffs)} users while traffic flowed: {before} of their "
            f"acknowledged events from before the erasures, {len(kept)} stored at the end; "
            f"{after} of theirs from after, stored; {len(replayed)} erased records "
            f"re-published as they were and under a fresh eventId; the consumer dropped "
            f"{stats['erasedDropped']} records as erased"
        )
        problems = []
        if kept:
            problems.append(f"{len(kept)} erased events stored again, e.g. {kept[0]['eventId']}")
        if before == 0:
            problems.append("no erased user had an acknowledged event: the scenario proved nothing")
        # The fresh copies have no seen mark or claim: only the erasure record drops them.
        if int(stats["erasedDropped"]) < len(fresh):
            problems.append(f"dropped as erased: {stats['erasedDropped']} < {len(fresh)}")
        return problems

    check(result, erasures_last)


def _erase(run: Run, user: str) -> str:
    """DELETE the user's events on the untouched replica; the erasure's cutoff."""
    assert run.reader is not None
    r = requests.delete(f"{run.reader.base}/users/{quote(user, safe='')}/events", timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["erasedThrough"])


def _events_of(run: Run, users: Iterable[str]) -> list[ClientEvent]:
    wanted = set(users)
    with run.ledger.lock:
        return [e for e in run.ledger.events.values() if e.user in wanted]


def _set_aside(run: Run, cutoffs: dict[str, str]) -> int:
    """Remove from the ledger the erased users' events that were not acknowledged with a
    timestamp after their erasure's cutoff; how many of those were acknowledged."""
    acked = 0
    for e in _events_of(run, cutoffs):
        after = e.record is not None and e.record["timestamp"] > cutoffs[e.user]
        if not after:
            acked += e.acked_key is not None
            with run.ledger.lock:
                del run.ledger.events[e.marker]
    return acked


def test_poison_and_original_shape_records(make_run: MakeRun, private_kafka: KafkaBroker) -> None:
    with make_run("poison") as run:
        run.start(replicas=3)
        run.start_traffic()
        poison: list[Raw] = []
        legacy_users = [f"{run.ledger.run}-legacy-u{u}" for u in range(8)]
        chunks = max(5, run.events // 500)
        per_chunk = max(6, run.events // 12 // chunks)
        legacy_count = 0

        # Records as the original design's producer wrote them: no schemaVersion, headers
        # eventType and timestamp only. Mixed with poison (2 legacy : 1 poison) and spread
        # over the traffic, well under the poison guard's share. Each chunk waits for its
        # share of the HTTP traffic to be answered, not for the clock: on a loaded machine
        # the clients fall behind, and chunks sent on time then become a real poison flood
        # (a partition holding nothing else) that the guard rightly stops for.
        # Halfway, records as large as the broker takes: their dead letters would not fit
        # whole, so they go bounded, and the consumers must keep going.
        huge_at = chunks // 2
        run.at(0.2)
        run.fault("poison and original-shape records start")
        for chunk in range(chunks):
            _await_traffic(run, 0.2 + 0.5 * chunk / chunks)
            items: list[Raw] = []
            for i in range(per_chunk):
                if i % 3 == 2:
                    poison.append(Raw(f"poison-{len(poison)}".encode(), _poison(len(poison))))
                    items.append(poison[-1])
                else:
                    user = legacy_users[legacy_count % len(legacy_users)]
                    event = run.ledger.new_event("legacy", legacy_count, user, direct=True)
                    items.append(_original_shape(event, (chunk, i)))
                    legacy_count += 1
                if chunk == huge_at and i < len(SIZE_LIMIT_POISON):
                    poison.append(SIZE_LIMIT_POISON[i](len(poison)))
                    items.append(poison[-1])
            produce(private_kafka.bootstrap, run.topic, items, BROKER_SIZED)
        result = run.finish()
        stats = _stats(run)
        dead = read_topic(private_kafka.bootstrap, f"{run.topic}.dlq", timeout=60)

    def dead_lettered() -> list[str]:
        # A dead letter holds the poison value, or, when the value was cut, its digest.
        values = {_value_digest(m) for m in dead}
        missing = [r for r in poison if hashlib.sha256(r.value or b"").hexdigest() not in values]
        cut = Counter(
            dict(m.headers() or [])["dlq.cut"].decode()
            for m in dead
            if "dlq.cut" in dict(m.headers() or [])
        )
        result.notes.append(
            f"{legacy_count} original-shape records and {len(poison)} poison records produced "
            f"straight to Kafka ({len(SIZE_LIMIT_POISON)} as large as the broker takes: a "
            f"huge key, huge headers, many headers, a huge value); {len(dead)} records in "
            f"the dead-letter topic, cut to fit: {dict(cut)}; the "
            f"consumer counts {stats['deadLettered']} dead-lettered "
            f"{stats['deadLetteredByReason']}"
        )
        problems = []
        if missing:
            problems.append(f"{len(missing)} poison records are not in the dead-letter topic")
        if len(dead) > len(poison):
            problems.append(f"{len(dead) - len(poison)} good records were dead-lettered")
        return problems

    check(result, dead_lettered)


def test_producer_sigterm_with_requests_in_flight(make_run: MakeRun) -> None:
    with make_run("producer-sigterm") as run:
        run.start(replicas=3)
        # One batch client through the tracking API: its retries after the restart rely
        # on messageIds alone.
        run.start_traffic(tracking=True)
        run.at(0.4)
        old = run.producer
        sigterm_at = time.monotonic()
        old.proc.send_signal(signal.SIGTERM)
        run.fault("producer SIGTERMed, a new one started once it exited")
        code = old.wait()
        exited_at = time.monotonic()
        run.start_producer(wait=False)
        result = run.finish()

    def clean_stop() -> list[str]:
        in_flight = [r for r in run.ledger.requests if r.sent_at < sigterm_at < r.done_at]
        outcomes = _count(r.outcome for r in in_flight)
        answered_again = min(
            (r.done_at for r in run.ledger.requests if r.outcome == 201 and r.sent_at > exited_at),
            default=float("nan"),
        )
        result.notes.append(
            f"the old producer exited {code} {exited_at - sigterm_at:.1f} s after SIGTERM; the "
            f"new one answered its first 201 {answered_again - exited_at:.1f} s after that; "
            f"requests in flight at the signal: {summarise_outcomes(outcomes)} "
            "(conn = connection closed or refused; retried with the same key)"
        )
        problems = []
        if code != 0:
            problems.append(f"the producer exited {code} on SIGTERM:\n{old.tail()}")
        unclean = {k: v for k, v in outcomes.items() if k not in (200, 201, 503, "conn")}
        if unclean:
            problems.append(f"requests in flight at SIGTERM answered {unclean}")
        tracked = sum(1 for r in run.ledger.requests if r.outcome == 200)
        result.notes.append(f"/v1/batch requests answered 200: {tracked}")
        if not tracked:
            problems.append("no /v1/batch request was acknowledged: the tracking API untested")
        if not outcomes.get(201) and not outcomes.get(200):
            problems.append("no request in flight at SIGTERM was answered 201: proved nothing")
        return problems

    check(result, clean_stop)


def _original_shape(event: ClientEvent, key: Key) -> Raw:
    """`event` as the replaced service published it: no schemaVersion, and only the
    headers eventType and timestamp. Marked sent and acknowledged under `key`: the caller
    produces it and waits for Kafka's acknowledgement."""
    record = {
        "eventId": str(uuid.uuid4()),
        "userId": event.user,
        "eventType": event.body["eventType"],
        "timestamp": utc_timestamp(),
        "payload": event.body["payload"],
    }
    event.sent_key = event.acked_key = key
    event.receipts.append(record["eventId"])
    headers = [
        (HEADER_EVENT_TYPE, record["eventType"].encode()),
        (HEADER_TIMESTAMP, record["timestamp"].encode()),
    ]
    return Raw(event.user.encode(), compact_json(record), headers)


def _await_traffic(run: Run, share: float, timeout: float = 300) -> None:
    """Until `share` of the run's HTTP events were answered 201, or every client is done."""
    want = share * run.events
    deadline = time.monotonic() + timeout
    while run.ledger.acked_count() < want and any(c.is_alive() for c in run.clients):
        assert time.monotonic() < deadline, f"HTTP traffic stuck below {want:.0f} acked"
        time.sleep(0.05)


# Raw records at the broker's limit (a record batch of BROKER_MAX_MESSAGE_BYTES), each
# with a poison value unique to it: its n.
_NEAR_LIMIT = BROKER_MAX_MESSAGE_BYTES - 8 * 1024
SIZE_LIMIT_POISON: list[Callable[[int], Raw]] = [
    lambda n: Raw(b"k" * _NEAR_LIMIT, b"huge key %d" % n),
    lambda n: Raw(b"huge-headers", b"huge headers %d" % n, [("h", b"x" * 104_000)] * 10),
    lambda n: Raw(b"many-headers", b"many headers %d" % n, [("h", b"")] * 50_000),
    lambda n: Raw(b"huge-value", b"huge value %d " % n + b"x" * _NEAR_LIMIT),
]


def _value_digest(msg: Any) -> str:
    value = msg.value()
    if value is not None:
        return hashlib.sha256(value).hexdigest()
    return str(dict(msg.headers() or []).get("dlq.cut.value.sha256", b"").decode())


def _poison(n: int) -> bytes:
    kinds = [
        b"not json %d \xff" % n,
        compact_json({"eventId": "not-a-uuid", "userId": "u", "eventType": "LOGIN", "n": n}),
        compact_json({"hello": "world", "n": n}),
        compact_json([n, "an array, not an object"]),
    ]
    return kinds[n % len(kinds)]


def _count(outcomes: Iterable[Outcome]) -> Counter[Outcome]:
    return Counter(outcomes)


def _stats(run: Run) -> dict[str, Any]:
    assert run.reader is not None
    r = requests.get(f"{run.reader.base}/stats", timeout=5)
    assert r.status_code == 200, r.text
    stats: dict[str, Any] = r.json()
    return stats

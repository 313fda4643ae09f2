"""docs/reliability.md, written from the figures of a `make reliability` run."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime

from tests.conftest import ROOT

from .scenario import Result

COMMAND = "make reliability"

DESCRIPTIONS = {
    "consumer-sigkill": "1. consumer replicas SIGKILLed, repeatedly, while 3 run",
    "replicas-join-leave": "2. replicas joining and leaving (SIGTERM) under traffic",
    "redis-restart": "3. Redis SIGKILLed and restarted, then shut down cleanly and restarted",
    "broker-sigkill": "4. Kafka broker SIGKILLed and restarted",
    "duplicates": "5. re-published records, client retries of single events and batch subsets",
    "poison": "6. poison records and original-design records mixed in",
    "producer-sigterm": "7. producer SIGTERMed with requests in flight, then restarted",
    "cluster-consumer-sigkill": "1. consumer replicas SIGKILLed, repeatedly, while 3 run",
    "cluster-redis-restart": "3. a shard (master and its replica) SIGKILLed, the master "
    "restarted on its AOF",
    "cluster-duplicates": "5. re-published records, client retries of single events and "
    "batch subsets",
    "cluster-failover": "8. a master SIGKILLed mid-stream, its replica promoted, without WAIT",
    "cluster-failover-wait": "8. the same with `CONSUMER_REDIS_WAIT_REPLICAS=1`",
}

CLUSTER_INTRO = [
    "The same harness with the consumers pointed at a private Redis Cluster "
    "(`CONSUMER_REDIS_MODE=cluster`): 3 masters, one replica each, every node with AOF, "
    "`appendfsync always` and `noeviction`, `cluster-node-timeout` 2 s. Run here are the "
    "scenarios whose faults reach what the cluster changes: 1 (redelivery after a "
    "rebalance meets the cross-slot claims), 5 (duplicates are caught by claims that live "
    "in other slots than the events), and 3. Scenario 3 on a cluster: a master that has a "
    "replica is not restarted on its AOF but replaced by its replica (scenario 8), so the "
    "fault left for an AOF restart is a whole shard, master and replica, SIGKILLed together: "
    "its slots have no copy anywhere until the master has read its AOF back, the cluster "
    "reports `CLUSTERDOWN` meanwhile and the consumers back off. Scenarios 2, 4, 6 and 7 "
    "do nothing on the store that differs on a cluster and are not repeated.",
    "",
    "Scenario 8, the failover. The consumers store on the master of the busiest shard "
    "(the one holding most of the 6 partitions' hash tags); its replica is frozen "
    "(`SIGSTOP`) and its link closed for 1.5 s, so the master acknowledges writes alone, as "
    "behind a slow replica; then the master is SIGKILLed and the cluster promotes the "
    "replica by itself. Replication is asynchronous, so the loss is predicted, before the "
    "read-back, as exactly the events that (a) the killed master acknowledged (its AOF, read "
    "back on a copy: with `appendfsync always` that is everything it answered), (b) its "
    "replica never received (read from the replica before its promotion) and (c) whose "
    "offsets the consumer group had committed by the kill (read before the promotion, when "
    "no batch on those slots can be acknowledged). Events in (a) and (b) but not (c) are "
    "delivered again and stored on the new master. The scenario fails unless the "
    "acknowledged events missing at the end are exactly the predicted ones, none is "
    "duplicated and what is stored keeps per-user order. Without WAIT the prediction must "
    "name at least one event (the window was real); with `CONSUMER_REDIS_WAIT_REPLICAS=1` "
    "it must name none, and at least one batch attempt must have been refused for want of "
    "a replica's acknowledgement (the window was met): a batch counts as written only once "
    "a replica has it, so the "
    "master's lone writes (its eventId claims: the claims step comes first, and its failed "
    "`WAIT` stops the batch before any event is stored) were never committed, and the "
    "partitions of the promoted master wait until the old master is back as its replica. "
    "The measured figures are in the rows below and in the per-scenario notes.",
]


def _row(r: Result, predicted: bool = False) -> str:
    expected = f" | {len(r.expected_lost_ids):,}" if predicted else ""
    return (
        f"| {DESCRIPTIONS.get(r.scenario, r.scenario)} | {r.sent:,} | {r.acknowledged:,} "
        f"| {r.stored:,} | {r.lost:,}{expected} | {r.duplicated:,} | {r.order_breaks:,} "
        f"| {_seconds(r.worst_recovery)} | {'pass' if r.passed else '**FAIL**'} |"
    )


def _seconds(value: float | None) -> str:
    return "not recovered" if value is None else f"{value:.1f} s"


def _revision() -> str:
    """The commit the run tested, and whether the working tree differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def render(results: Sequence[Result], events: int, cluster_events: int) -> str:
    """The whole document. Every figure comes from `results`."""
    order = list(DESCRIPTIONS)
    results = sorted(results, key=lambda r: order.index(r.scenario) if r.scenario in order else 99)
    single = [r for r in results if r.backend != "cluster"]
    cluster = [r for r in results if r.backend == "cluster"]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability: what the suite measured",
        "",
        f"Generated by `{COMMAND}` (`tests/reliability/`, {events:,} events per scenario, "
        f"{cluster_events:,} on the Redis Cluster) "
        f"at {_revision()} on {now}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}. "
        "Do not edit by hand: run the command again.",
        "",
        "Each scenario starts real processes: the producer under gunicorn, consumer replicas "
        "(`consumer-service`, one group, one Redis prefix), and a Kafka broker and Redis of "
        "the suite's own (AOF, `appendfsync always`, `noeviction`). Concurrent clients send "
        "events through the HTTP API, most one by one through `/events/generate`, the rest "
        "through `/events/batch`; each client owns its users and sends a user's next event "
        "only after the previous answer, and retries a `503` or a broken connection with the "
        "same body and `Idempotency-Key`. After the faults the system settles (consumer lag "
        "0, stored count still), then every `201` is looked up through the read API of a "
        "replica that no fault touched.",
        "",
        "| scenario | sent | 201 | stored | lost | duplicated | order breaks "
        "| recovery time | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines.extend(_row(r) for r in single)
    lines += [
        "",
        "- **sent**: distinct events the clients sent (through the API, or straight to Kafka "
        "in scenario 6), each counted once however often it was retried.",
        "- **201**: those acknowledged (a `201`, a `201` item of a `207`, or Kafka's "
        "acknowledgement for records produced directly).",
        "- **stored**: events in the store at the end. It can exceed 201 by events whose "
        '`503`ed attempt Kafka had written anyway (allowed: a `503` means "not '
        'acknowledged", not "not written").',
        "- **lost**: acknowledged events whose `eventId` does not lead to that event in the store.",
        "- **duplicated**: events stored more than once, under one `eventId` or several "
        "(each event carries a unique marker in its payload).",
        "- **order breaks**: per user, an event stored before one that was acknowledged "
        "before it was even sent (the per-user order promise of docs/guarantees.md).",
        "- **recovery time**: the worst, over the scenario's faults, of the time from the "
        "fault to the moment an event sent after it was readable on every partition (one "
        "probe event per partition, sent once the previous probe was stored). It includes "
        "the time the fault itself lasted: a broker restart, a replica's 6 s session "
        "timeout, Redis's downtime.",
        "",
    ]
    if cluster:
        lines += [
            "## On a Redis Cluster",
            "",
            *CLUSTER_INTRO,
            "",
            "| scenario | sent | 201 | stored | lost | predicted lost | duplicated "
            "| order breaks | recovery time | verdict |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *(_row(r, predicted=True) for r in cluster),
            "",
            "- **predicted lost**: acknowledged events the failover was predicted to lose "
            "(scenario 8, as above); 0 for every other scenario.",
            "",
        ]
    lines += ["## Per scenario", ""]
    for r in results:
        where = " (Redis Cluster)" if r.backend == "cluster" else ""
        lines.append(f"### {DESCRIPTIONS.get(r.scenario, r.scenario)}{where}")
        lines.append("")
        lines.append(f"- ran {r.seconds:.0f} s")
        for recovery in r.recovery:
            lines.append(f"- {recovery.label}: recovered in {_seconds(recovery.seconds)}")
        lines.extend(f"- {note}" for note in r.notes)
        lines.extend(f"- **problem**: {p.splitlines()[0]}" for p in r.problems)
        lines.append("")
    return "\n".join(lines)

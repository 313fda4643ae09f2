"""Client processes killed, resumed and forked, against the real stack: what a process
tracked is stored exactly once and in order, whatever happened to the process."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.client.conftest import Producer, Stack, client_env, expect_stored
from tests.services import free_port

pytestmark = pytest.mark.integration

CHILD = [sys.executable, "-m", "tests.integration.client.child"]


def test_client_sigkilled_with_spool_then_resumed(
    stack: Stack, start_producer: Callable[..., Producer], tmp_path: Path
) -> None:
    # A linger keeps requests in flight, so the kill lands between a batch reaching
    # Kafka and its answer: the resumed process resends it and nothing is doubled.
    producer = start_producer(PRODUCER_LINGER_MS="100")
    spool = str(tmp_path / "events.spool")
    out = tmp_path / "tracked.txt"
    with out.open("w") as sink:
        child = subprocess.Popen(
            [*CHILD, "track", producer.url, spool, "killed"], env=client_env(), stdout=sink
        )
        time.sleep(2.5)
        child.kill()
        child.wait(10)
    tracked = [int(line) for line in out.read_text().split()]
    assert len(tracked) > 200, "the client tracked too little before the kill"
    resumed = subprocess.run(
        [*CHILD, "resume", producer.url, spool],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    left = int(resumed.stdout.split()[1])
    assert left > 0, "nothing was left unacknowledged at the kill; the test proved nothing"
    sent: dict[str, list[int]] = {f"killed-{u}": [] for u in range(4)}
    for n in tracked:
        sent[f"killed-{n % 4}"].append(n)
    # The event being tracked at the kill may be in the spool without its line printed.
    maybe = tracked[-1] + 1
    expect_stored(stack, sent, maybe={f"killed-{maybe % 4}": maybe})


def test_fork_child_gets_its_own_sender(
    stack: Stack, start_producer: Callable[..., Producer]
) -> None:
    producer = start_producer()
    run = subprocess.run(
        [*CHILD, "fork", producer.url, "forked"],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    expect_stored(stack, {"forked-parent": list(range(200)), "forked-child": list(range(100))})


def test_cli_backfill_resumes_through_its_spool(
    stack: Stack, start_producer: Callable[..., Producer], tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    lines = []
    for n in range(3000):
        lines.append(
            json.dumps({"userId": f"cli-{n % 4}", "eventType": "LOGIN", "payload": {"n": n}})
        )
        if n == 100:
            lines.append("not json")
        if n == 200:
            lines.append(json.dumps({"userId": "cli-0", "eventType": "NOT_A_TYPE"}))
    source.write_text("\n".join(lines) + "\n")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "activity_client.cli",
        "send",
        str(source),
        "--url",
        f"http://127.0.0.1:{port}",
        "--no-progress",
    ]
    # Nobody listens yet: the file is spooled, nothing is acknowledged.
    first = subprocess.run(
        [*command, "--timeout", "1"], env=client_env(), capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 3, first.stderr
    assert "run the same command again" in first.stderr
    start_producer(port)
    second = subprocess.run(command, env=client_env(), capture_output=True, text=True, timeout=90)
    # 1: the bad line and the event the server refused were reported.
    assert second.returncode == 1, second.stderr
    assert "NOT_A_TYPE" in second.stderr
    third = subprocess.run(command, env=client_env(), capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and "nothing to do" in third.stderr, third.stderr
    expect_stored(stack, {f"cli-{u}": list(range(u, 3000, 4)) for u in range(4)})


def test_forked_child_spools_apart_and_its_events_are_adopted(
    stack: Stack, start_producer: Callable[..., Producer], tmp_path: Path
) -> None:
    spool = str(tmp_path / "events.spool")
    # Nobody listens on this port: parent and child only spool.
    down = f"http://127.0.0.1:{free_port()}"
    run = subprocess.run(
        [*CHILD, "fork-spool", down, spool, "forkspool"],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert glob.glob(spool + ".fork-*"), "the child did not spool to a file of its own"
    producer = start_producer()
    resumed = subprocess.run(
        [*CHILD, "resume", producer.url, spool],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.split()[1] == "150"  # the parent's 100 and the child's 50
    assert glob.glob(spool + ".fork-*") == []
    expect_stored(stack, {"forkspool-parent": list(range(100)), "forkspool-child": list(range(50))})

"""infra/run.sh (`make run`) hands the services the addresses it was given: the local
stack's ports (LOCAL_KAFKA_PORT, LOCAL_REDIS_PORT) when KAFKA_BOOTSTRAP_SERVERS / REDIS_URL
are unset, and starts a local broker or Redis only for a local address.

run.sh runs in a copy of the repo whose Kafka, Redis and topic scripts are stubs that
record how they were called (so no broker or Redis is touched), and whose services are
fakes that record the addresses they were given, then exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[3]

# Each stub appends one line to $CALLS. `status` answers "not running", so run.sh shows
# whether it would start a local one.
SCRIPT_STUB = """#!/bin/sh
ports="kafka_port=${LOCAL_KAFKA_PORT:-} redis_port=${LOCAL_REDIS_PORT:-}"
echo "$(basename "$0") $1 $ports" >>"$CALLS"
[ "$1" != status ]
"""
TOPICS_STUB = """import os
with open(os.environ["CALLS"], "a") as calls:
    print("topics.py", os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), file=calls)
"""
# Records the addresses, then exits after a second (run.sh then stops, status 1): enough
# for both fakes to write their line before run.sh stops the other one.
SERVICE_FAKE = """#!/bin/sh
echo "$(basename "$0") $KAFKA_BOOTSTRAP_SERVERS ${REDIS_URL-unset}" >>"$CALLS"
sleep 1
"""
REDIS_CLI_STUB = """#!/bin/sh
echo "redis-cli $*" >>"$CALLS"
{answer}
"""


@dataclass
class Run:
    returncode: int
    stderr: str
    calls: list[str]

    def called(self, prefix: str) -> list[str]:
        return [line for line in self.calls if line.startswith(prefix)]


def write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def run_sh(tmp_path: Path, redis_answers: bool = True, **env_vars: str) -> Run:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "run.sh", root / "infra" / "run.sh")
    for script in ("kafka.sh", "redis.sh"):
        write_exe(root / "infra" / script, SCRIPT_STUB)
    (root / "infra" / "topics.py").write_text(TOPICS_STUB)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    for name in ("producer-service", "consumer-service"):
        write_exe(bin_dir / name, SERVICE_FAKE)
    write_exe(
        bin_dir / "redis-cli", REDIS_CLI_STUB.format(answer="echo PONG" if redis_answers else "")
    )
    calls = tmp_path / "calls"
    calls.touch()
    unset = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "LOCAL_KAFKA_PORT", "LOCAL_REDIS_PORT")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        PYTHON=str(bin_dir / "python"),
        CALLS=str(calls),
        PRODUCER_PORT=str(free_port()),
        CONSUMER_PORT=str(free_port()),
        **env_vars,
    )
    result = subprocess.run(
        [str(root / "infra" / "run.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    return Run(result.returncode, result.stderr, calls.read_text().splitlines())


def test_the_local_ports_reach_the_services(tmp_path: Path) -> None:
    run = run_sh(tmp_path, LOCAL_KAFKA_PORT="19192", LOCAL_REDIS_PORT="16390")

    assert run.called("kafka.sh start") == ["kafka.sh start kafka_port=19192 redis_port=16390"]
    assert run.called("redis.sh start") == ["redis.sh start kafka_port=19192 redis_port=16390"]
    assert run.called("topics.py") == ["topics.py 127.0.0.1:19192"]
    assert sorted(run.called("producer") + run.called("consumer")) == [
        "consumer-service 127.0.0.1:19192 redis://127.0.0.1:16390/0",
        # The producer's quota moves into Redis only when the caller sets REDIS_URL.
        "producer-service 127.0.0.1:19192 unset",
    ]


def test_by_default_the_services_use_the_local_stack(tmp_path: Path) -> None:
    run = run_sh(tmp_path)

    assert len(run.called("kafka.sh start")) == 1
    assert len(run.called("redis.sh start")) == 1
    assert sorted(run.called("producer") + run.called("consumer")) == [
        "consumer-service 127.0.0.1:9092 redis://127.0.0.1:6379/0",
        "producer-service 127.0.0.1:9092 unset",
    ]


@pytest.mark.parametrize(
    "bootstrap", ["localhost:9092", "127.0.0.1:9094", "127.0.0.1:9092,127.0.0.1:9093"]
)
def test_a_local_address_gets_a_local_broker_only_when_it_is_the_local_one(
    tmp_path: Path, bootstrap: str
) -> None:
    run = run_sh(tmp_path, KAFKA_BOOTSTRAP_SERVERS=bootstrap)

    local = bootstrap in ("localhost:9092", "127.0.0.1:9094")  # the SASL listener's port
    assert bool(run.called("kafka.sh start")) is local
    assert run.called("topics.py") == [f"topics.py {bootstrap}"]


def test_an_address_elsewhere_gets_no_local_broker_or_redis(tmp_path: Path) -> None:
    run = run_sh(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS="kafka.example:9092",
        REDIS_URL="redis://:secret@cache.example:6380/2",
    )

    assert run.called("kafka.sh") == []
    assert "no local broker" in run.stderr
    # redis.sh start only looks at the Redis that answers at REDIS_URL (its durability
    # settings); it starts none.
    assert run.called("redis.sh status") == []
    assert run.called("topics.py") == ["topics.py kafka.example:9092"]
    assert sorted(run.called("producer") + run.called("consumer")) == [
        "consumer-service kafka.example:9092 redis://:secret@cache.example:6380/2",
        "producer-service kafka.example:9092 redis://:secret@cache.example:6380/2",
    ]


def test_a_redis_elsewhere_that_does_not_answer_stops_the_run(tmp_path: Path) -> None:
    run = run_sh(tmp_path, redis_answers=False, REDIS_URL="redis://:secret@cache.example:6380/2")

    assert run.returncode == 1
    assert "nothing answers at REDIS_URL" in run.stderr
    assert "secret" not in run.stderr
    assert run.called("redis.sh") == []
    assert run.called("producer") == run.called("consumer") == []

"""/ready of the read API, without Redis or Kafka: one check serves every request that
arrives while it runs or while it is fresh, and the answer names components and states
only."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from consumer_service.api import create_app
from consumer_service.api.readiness import Readiness, SharedAnswer
from consumer_service.config import ConsumerSettings, ReadApiSettings
from consumer_service.pipeline.status import StatusFile, WorkerStatus
from shared.config import CommonSettings

SECRET_DETAIL = "Kafka at broker-7.internal:9094 (SASL_SSL/PLAIN as 'svc-user') refused"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingProbe:
    """A probe that counts its calls and, when `gate` is given, waits for it."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls = 0
        self.gate = gate
        self.started = threading.Event()

    def __call__(self) -> int:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return self.calls


def test_an_answer_is_reused_while_fresh() -> None:
    clock = FakeClock()
    probe = CountingProbe()
    answer = SharedAnswer(probe, ttl=1.0, clock=clock)
    assert [answer.get() for _ in range(5)] == [1] * 5
    clock.now += 0.99
    assert answer.get() == 1
    clock.now += 0.02
    assert answer.get() == 2
    assert probe.calls == 2


def test_concurrent_callers_share_one_probe() -> None:
    gate = threading.Event()
    probe = CountingProbe(gate)
    # No reuse by age: only the callers that arrive while the probe runs share it.
    answer = SharedAnswer(probe, ttl=0.0)
    with ThreadPoolExecutor(max_workers=16) as pool:
        first = pool.submit(answer.get)
        assert probe.started.wait(10)
        rest = [pool.submit(answer.get) for _ in range(15)]
        time.sleep(0.2)  # let them queue behind the probe in flight
        gate.set()
        answers = [first.result(10)] + [f.result(10) for f in rest]
    assert probe.calls == 1
    assert answers == [1] * 16
    assert answer.get() == 2  # asked after that probe ended: a new one


def test_a_failed_probe_is_not_kept() -> None:
    calls: list[int] = []

    def probe() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("flaky")
        return len(calls)

    answer = SharedAnswer(probe, ttl=60.0, clock=FakeClock())
    with pytest.raises(RuntimeError):
        answer.get()
    assert answer.get() == 2
    assert answer.get() == 2


class FakeStore:
    opaque_cursor = False

    def __init__(self) -> None:
        self.pings = 0
        self.up = True

    def ping(self) -> bool:
        self.pings += 1
        time.sleep(0.05)  # a check that takes a while, as a real one does
        return self.up

    def close(self) -> None:
        pass


@pytest.fixture
def kafka_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def kafka_check(self: Readiness) -> tuple[str, str | None]:
        calls.append(1)
        return "auth_failed", SECRET_DETAIL

    monkeypatch.setattr(Readiness, "kafka_check", kafka_check)
    return calls


def app_client(store: FakeStore, status: StatusFile | None, cache: float) -> Any:
    settings = ConsumerSettings(
        common=CommonSettings(kafka_bootstrap_servers="broker-7.internal:9094"),
        api=ReadApiSettings(ready_cache_seconds=cache),
    )
    return create_app(settings, store, status).test_client()  # type: ignore[arg-type]


def test_concurrent_ready_requests_cause_one_check(kafka_calls: list[int]) -> None:
    store = FakeStore()
    client = app_client(store, None, cache=1.0)
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: client.get("/ready"), range(20)))
    assert {a.status_code for a in answers} == {503}
    assert (store.pings, len(kafka_calls)) == (1, 1)


def test_the_answer_names_states_and_nothing_else(
    kafka_calls: list[int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    store.up = False
    status = StatusFile(tmp_path / "status.json")
    status.write(WorkerStatus("backing_off", time.time(), 3, SECRET_DETAIL), force=True)
    answer = app_client(store, status, cache=0.0).get("/ready")
    assert answer.status_code == 503
    assert answer.get_json() == {
        "status": "not_ready",
        "checks": {"redis": "unreachable", "kafka": "auth_failed", "worker": "backing_off"},
        "error": {
            "type": "not_ready",
            "message": "Not ready: redis unreachable, kafka auth_failed, worker backing_off.",
        },
    }
    # The details are in the log instead.
    (line,) = [r for r in caplog.records if r.getMessage() == "not ready"]
    assert line.__dict__["problems"]["kafka"] == SECRET_DETAIL


# (state, seconds since the report, partitions, detail); the report's time is taken when
# the test runs, not when it is collected (under xdist that can be minutes earlier).
@pytest.mark.parametrize(
    ("report", "state"),
    [
        (None, "not_reported"),
        (("running", 3600, 3, ""), "stalled"),
        (("joining", 0, 0, ""), "joining"),
        (("failed", 0, 0, SECRET_DETAIL), "failed"),
        (("running", 0, 3, ""), "ok"),
    ],
)
def test_worker_states(
    kafka_calls: list[int],
    tmp_path: Path,
    report: tuple[Any, float, int, str] | None,
    state: str,
) -> None:
    file = StatusFile(tmp_path / "status.json")
    if report is not None:
        name, age, partitions, detail = report
        file.write(WorkerStatus(name, time.time() - age, partitions, detail), force=True)
    body = app_client(FakeStore(), file, cache=0.0).get("/ready").get_json()
    assert body["checks"]["worker"] == state

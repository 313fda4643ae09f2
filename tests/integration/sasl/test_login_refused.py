"""A worker whose Kafka login is refused mid-run (its SCRAM credential deleted) reports
`backing_off`, naming the login, and `running` again once the credential is back: after
a rejoin when the refusal outlasted the session, after a quiet spell when it did not."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ScramMechanism, UserScramCredentialDeletion

import consumer_service.pipeline.login as login_module
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.dlq import KafkaDeadLetterQueue
from consumer_service.pipeline.status import StatusFile, WorkerStatus
from consumer_service.pipeline.worker import EXIT_OK, Worker
from consumer_service.storage import RedisEventStore
from infra.topics import ensure_topics, upsert_scram_user
from shared.config import CommonSettings

from .conftest import wait_until

PASSWORD = "rotated-away-secret"


def drop_connections_to(port: int) -> int:
    """Shut down this process's TCP connections to `port` (librdkafka's, among them), so
    its clients reconnect and log in again: a broker does not drop a live session when a
    credential is deleted. The dup is shut down, not closed, so librdkafka's descriptor
    stays valid and only sees the connection end."""
    dropped = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            peer = sock.getpeername() if sock.type == socket.SOCK_STREAM else None
            if isinstance(peer, tuple) and peer[1] == port:
                sock.shutdown(socket.SHUT_RDWR)
                dropped += 1
        except OSError:
            pass
        finally:
            sock.close()
    return dropped


@pytest.fixture
def scram_user(kafka_bootstrap: str) -> Iterator[str]:
    """A SCRAM-SHA-512 user of this test alone (never the shared "pipeline" user),
    managed through the PLAINTEXT listener."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    upsert_scram_user(kafka_bootstrap, name, PASSWORD)
    yield name
    delete_scram_user(kafka_bootstrap, name, missing_ok=True)


def delete_scram_user(bootstrap: str, name: str, missing_ok: bool = False) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deletion = UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_512)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        try:
            future.result()
        except Exception:
            if not missing_ok:
                raise


NEEDS_PROC = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="needs /proc to drop sockets"
)


class Running:
    """A worker running in a thread, logged in as the test's SCRAM user."""

    def __init__(self, worker: Worker, status_file: StatusFile) -> None:
        self.worker = worker
        self.status_file = status_file

    def status(self) -> WorkerStatus:
        found = self.status_file.read()
        assert found is not None
        return found

    def in_state(self, state: str) -> Callable[[], WorkerStatus | None]:
        def check() -> WorkerStatus | None:
            found = self.status_file.read()
            return found if found is not None and found.state == state else None

        return check


@contextmanager
def running_worker(
    sasl_common: CommonSettings,
    topic: str,
    user: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    session_timeout_ms: int,
) -> Iterator[Running]:
    settings = ConsumerSettings(
        common=replace(
            sasl_common,
            kafka_topic=topic,
            kafka_sasl_username=user,
            kafka_sasl_password=PASSWORD,
        ),
        consumer_group=f"{topic}-group",
        redis_prefix=redis_prefix,
        poll_timeout_seconds=0.1,
        session_timeout_ms=session_timeout_ms,
    )
    ensure_topics(kafka_bootstrap, [settings.dlq_topic], 3)
    store = RedisEventStore.from_url(redis_url, redis_prefix, 60)
    dlq = KafkaDeadLetterQueue(kafka_bootstrap, settings.dlq_topic, settings.consumer_group, 10.0)
    status_file = StatusFile(tmp_path / "status.json")
    worker = Worker(settings, store, dlq, status_file)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    running = Running(worker, status_file)
    try:
        wait_until(running.in_state("running"), 60, "the worker to join through SASL")
        yield running
        assert thread.is_alive()
    finally:
        worker.request_stop()
        thread.join(30)
        store.close()
    assert not thread.is_alive() and codes == [EXIT_OK]


def refuse_login(sasl_common: CommonSettings, kafka_bootstrap: str, user: str) -> None:
    delete_scram_user(kafka_bootstrap, user)
    assert drop_connections_to(int(sasl_common.kafka_bootstrap_servers.rsplit(":", 1)[1]))


@NEEDS_PROC
def test_a_refused_login_mid_run_is_backing_off_until_the_credential_is_back(
    sasl_common: CommonSettings,
    sasl_topic: str,
    scram_user: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="consumer_service.pipeline.worker")
    with running_worker(
        sasl_common, sasl_topic, scram_user, kafka_bootstrap, redis_url, redis_prefix,
        tmp_path, session_timeout_ms=6000,
    ) as run:  # fmt: skip
        refuse_login(sasl_common, kafka_bootstrap, scram_user)
        refused = wait_until(run.in_state("backing_off"), 30, "backing_off")
        assert isinstance(refused, WorkerStatus)
        assert "refused the login" in refused.detail
        assert f"as {scram_user!r}" in refused.detail
        assert sasl_common.kafka_bootstrap_servers in refused.detail
        assert PASSWORD not in refused.detail
        # What /ready logs as the worker's problem (readiness.Readiness.worker_check).
        problem = refused.problem(60)
        assert problem is not None and f"as {scram_user!r}" in problem

        # librdkafka retries the login every few hundred ms: still one ERROR line.
        time.sleep(3)
        assert run.status().state == "backing_off"
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "refused the worker's login" in errors[0].getMessage()

        # Refused past the session timeout, the member is expelled; back in, it rejoins,
        # and that assignment is the worker's sign that the login works again.
        wait_until(lambda: not run.worker.assigned, 30, "the group to expel the member")
        upsert_scram_user(kafka_bootstrap, scram_user, PASSWORD)
        wait_until(run.in_state("running"), 60, "running again after the credential")
        assert run.status().detail == ""
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


@NEEDS_PROC
def test_a_short_refusal_on_a_quiet_topic_ends_after_a_quiet_spell(
    sasl_common: CommonSettings,
    sasl_topic: str,
    scram_user: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No record and no rebalance will say the login works again: the session (45 s) is
    # not over when the credential is back. Only the quiet spell can end the back-off.
    monkeypatch.setattr(login_module, "LOGIN_QUIET_SECONDS", 4.0)
    with running_worker(
        sasl_common, sasl_topic, scram_user, kafka_bootstrap, redis_url, redis_prefix,
        tmp_path, session_timeout_ms=45_000,
    ) as run:  # fmt: skip
        assigned = run.worker.assigned
        refuse_login(sasl_common, kafka_bootstrap, scram_user)
        wait_until(run.in_state("backing_off"), 30, "backing_off")
        upsert_scram_user(kafka_bootstrap, scram_user, PASSWORD)
        back = wait_until(run.in_state("running"), 30, "running after the quiet spell")
        assert isinstance(back, WorkerStatus) and back.detail == ""
        assert run.worker.assigned == assigned  # never expelled: no rejoin ended it

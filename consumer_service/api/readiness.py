"""/ready of the read API: Redis, Kafka and the worker's heartbeat, checked at most once a
`CONSUMER_READY_CACHE_SECONDS` per process, answered with stable names only.

The answer goes to whoever asks, without credentials: it names each component and its
state (`ok`, `unreachable`, `auth_failed`, ...), never a host, a user name or an error's
own text. Those go to the log, once per check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from flask import Response, current_app, jsonify

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.status import StatusFile
from consumer_service.storage import EventStore
from consumer_service.topics import TopicMissing, topic_metadata
from shared.kafka import AuthenticationWatch, KafkaAuthenticationFailed, client_config

log = logging.getLogger(__name__)

READINESS = "consumer_service.readiness"
# The longest a Kafka metadata request of a check may take.
KAFKA_TIMEOUT_SECONDS = 1.5

T = TypeVar("T")


class SharedAnswer(Generic[T]):
    """`probe()`'s answer, asked at most once per `ttl` seconds (after the last probe
    ended), and shared by every caller that arrives while a probe runs: they wait for
    it rather than start their own. Thread-safe; `get` blocks for as long as a probe
    takes. A probe that raises is not kept (the next caller probes again)."""

    def __init__(
        self, probe: Callable[[], T], ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._probe = probe
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._answer: T | None = None
        self._ended = -float("inf")

    def get(self) -> T:
        asked = self._clock()
        with self._lock:
            # Fresh enough, or ended after this caller asked (it waited for that probe).
            if self._answer is not None and (
                self._ended >= asked or self._clock() - self._ended < self._ttl
            ):
                return self._answer
            answer = self._probe()
            self._answer, self._ended = answer, self._clock()
            return answer


@dataclass(frozen=True)
class ReadyAnswer:
    """What /ready answers: each component's state by name, "ok" when well."""

    checks: Mapping[str, str]

    @property
    def ready(self) -> bool:
        return all(state == "ok" for state in self.checks.values())


class Readiness:
    """What /ready checks: Redis, Kafka and (when the API runs next to a worker) the
    worker's heartbeat. Held in app.extensions."""

    def __init__(
        self, settings: ConsumerSettings, store: EventStore, status_file: StatusFile | None
    ) -> None:
        self.settings = settings
        self.store = store
        self.status_file = status_file
        self._admin: AdminClient | None = None
        self._kafka_auth = AuthenticationWatch()
        self._answer = SharedAnswer(self.check, settings.api.ready_cache_seconds)

    def answer(self) -> ReadyAnswer:
        """The last check's answer if fresh (see `SharedAnswer`), else a new check's."""
        return self._answer.get()

    def check(self) -> ReadyAnswer:
        """Check every component now; log why any is not ready."""
        checks: dict[str, str] = {}
        problems: dict[str, str] = {}
        checks["redis"] = "ok" if self.store.ping() else "unreachable"
        if checks["redis"] != "ok":
            problems["redis"] = "Redis does not answer"
        checks["kafka"], kafka_problem = self.kafka_check()
        if kafka_problem is not None:
            problems["kafka"] = kafka_problem
        if self.status_file is not None:
            checks["worker"], worker_problem = self.worker_check()
            if worker_problem is not None:
                problems["worker"] = worker_problem
        if problems:
            log.warning("not ready", extra={"checks": checks, "problems": problems})
        return ReadyAnswer(checks)

    def kafka_check(self) -> tuple[str, str | None]:
        """("ok", None) when the broker answers a metadata request for our topic, else
        the state (`auth_failed`, `topic_missing`, `unreachable`) and why, in words."""
        common = self.settings.common
        if self._admin is None:
            # Created lazily: gunicorn forks workers after importing the app.
            self._admin = AdminClient(client_config(common, {"error_cb": self._kafka_auth}))
        try:
            topic_metadata(
                self._admin, common, self._kafka_auth, KAFKA_TIMEOUT_SECONDS, common.kafka_topic
            )
        except KafkaAuthenticationFailed as exc:
            return "auth_failed", str(exc)
        except TopicMissing as exc:
            return "topic_missing", str(exc)
        except KafkaException as exc:
            return "unreachable", f"Kafka did not answer: {exc}"
        return "ok", None

    def worker_check(self) -> tuple[str, str | None]:
        """("ok", None) when the worker's last heartbeat says it is well, else the state
        (`not_reported`, or a `WorkerStatus.check` name) and why, in words."""
        assert self.status_file is not None
        status = self.status_file.read()
        if status is None:
            return "not_reported", "the worker has not reported yet"
        now = time.time()
        stall = self.settings.api.stall_seconds
        return status.check(stall, now), status.problem(stall, now)


def ready() -> Response:
    """200 when Redis, Kafka and the worker are all well; else 503 naming each component
    that is not, by its state."""
    answer: ReadyAnswer = current_app.extensions[READINESS].answer()
    if answer.ready:
        return jsonify({"status": "ready", "checks": answer.checks})
    failing = ", ".join(f"{name} {state}" for name, state in answer.checks.items() if state != "ok")
    body = {
        "status": "not_ready",
        "checks": answer.checks,
        "error": {"type": "not_ready", "message": f"Not ready: {failing}."},
    }
    response = jsonify(body)
    response.status_code = 503
    return response

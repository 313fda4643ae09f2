"""A Kafka login refused while the worker runs: when it starts and when it ends.

librdkafka does not treat a refused login as fatal: it retries every few hundred ms, and
nothing is consumed until the credentials are fixed. `LoginWatch` turns that into the
"backing_off" state (/ready says why, the log says it once per refusal, not once per
retry) and back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Set

from confluent_kafka import KafkaError

from consumer_service.pipeline.batch import TP
from consumer_service.pipeline.health import Health
from shared.kafka import AUTHENTICATION_ERRORS

log = logging.getLogger(__name__)

# A refused login ends when the group answers (an assignment), a batch is stored, or no
# refusal came for this long: longer than librdkafka's longest wait between two login
# attempts (reconnect.backoff.max.ms, 10 s), so a quiet spell means a login went through.
LOGIN_QUIET_SECONDS = 15.0


class LoginWatch:
    """The login-refusal state machine; the only owner of the refusal in progress. Main
    thread only (librdkafka serves error_cb inside consume()/poll()/close())."""

    def __init__(self, health: Health, assigned: Set[TP], where: str) -> None:
        self._health = health
        # A live view of the assignment: "running" or "joining" when the refusal ends.
        self._assigned = assigned
        self._where = where
        # The detail of the back-off a refused login caused, until the group answers.
        self._refused: str | None = None
        self._last_refusal = 0.0

    def refused(self, err: KafkaError) -> bool:
        """Take a client error: True when it is a refused login of a running worker
        (published as "backing_off" and logged, once per refusal), False when it is not
        this watch's to handle."""
        health = self._health
        if err.name() not in AUTHENTICATION_ERRORS or health.state not in (
            "joining",
            "running",
            "backing_off",
        ):
            return False
        self._last_refusal = time.monotonic()
        # Each retry's message differs (it says how long the attempt took): the first
        # one of a refusal is the one published and logged.
        if health.state != "backing_off" or health.detail != self._refused:
            detail = f"Kafka at {self._where} refused the login: {err.str()}"
            log.error("Kafka refused the worker's login", extra={"error": detail})
            self._refused = detail
            health.set("backing_off", detail)
        return True

    def accepted(self) -> None:
        """The login succeeded again: end the back-off a refused login caused. Called on an
        assignment (a refusal outlasting the session timeout always ends this way, since
        the member was expelled and has to rejoin) and by `tick` after a quiet spell (a
        short refusal, on a quiet topic); a stored batch ends it too (the worker is
        "running" again then)."""
        refused, self._refused = self._refused, None
        health = self._health
        if refused is not None and health.state == "backing_off" and health.detail == refused:
            log.info("Kafka accepts the worker's login again")
            health.set("running" if self._assigned else "joining")

    def tick(self) -> None:
        """Once a turn of the loop: end a refusal after LOGIN_QUIET_SECONDS without one."""
        if (
            self._refused is not None
            and time.monotonic() - self._last_refusal > LOGIN_QUIET_SECONDS
        ):
            self.accepted()

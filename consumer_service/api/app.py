"""The read API's application factory: `create_app()` builds one WSGI app per process.

    gunicorn 'consumer_service.api.app:create_app()'

(`consumer-service` starts it next to its worker, with consumer_service/gunicorn.conf.py.)
"""

from __future__ import annotations

import logging
import os
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from flask import Flask, Response, current_app, jsonify

from consumer_service import metrics as _worker_metrics  # noqa: F401  (names on /metrics)
from consumer_service.api.dashboard.views import init_app as init_dashboard
from consumer_service.api.erasure import bp as erasure_bp
from consumer_service.api.events import EXTENSION, ReadState
from consumer_service.api.events import bp as events_bp
from consumer_service.api.openapi import build_spec
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.status import StatusFile
from consumer_service.storage import EventStore, open_store
from consumer_service.topics import TopicMissing, topic_metadata
from shared import web
from shared.auth import Authenticator
from shared.errors import Unavailable
from shared.kafka import AuthenticationWatch, KafkaAuthenticationFailed, client_config
from shared.web import error_response

log = logging.getLogger(__name__)

READINESS = "consumer_service.readiness"


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

    def kafka_ok(self) -> str | None:
        """None when the broker answers a metadata request for our topic, else why not
        (saying so when it refused the credentials)."""
        common = self.settings.common
        if self._admin is None:
            # Created lazily: gunicorn forks workers after importing the app.
            self._admin = AdminClient(client_config(common, {"error_cb": self._kafka_auth}))
        try:
            topic_metadata(self._admin, common, self._kafka_auth, 1.5, common.kafka_topic)
        except (KafkaAuthenticationFailed, TopicMissing) as exc:
            return str(exc)
        except KafkaException as exc:
            return f"Kafka did not answer: {exc}"
        return None

    def worker_problem(self) -> str | None:
        """None when the worker's last heartbeat says it is well (or there is no worker
        to ask), else why not."""
        assert self.status_file is not None
        status = self.status_file.read()
        if status is None:
            return "the worker has not reported yet"
        return status.problem(self.settings.stall_seconds, time.time())


def ready() -> Response:
    """200 when Redis, Kafka and the worker are all well; else 503 naming each problem."""
    readiness: Readiness = current_app.extensions[READINESS]
    checks: dict[str, str] = {}
    problems: list[str] = []
    checks["redis"] = "ok" if readiness.store.ping() else "unreachable"
    if checks["redis"] != "ok":
        problems.append("Redis does not answer")
    kafka_problem = readiness.kafka_ok()
    checks["kafka"] = "ok" if kafka_problem is None else "unreachable"
    if kafka_problem:
        problems.append(kafka_problem)
    if readiness.status_file is not None:
        worker_problem = readiness.worker_problem()
        checks["worker"] = "ok" if worker_problem is None else "not_ready"
        if worker_problem:
            problems.append(worker_problem)
    if problems:
        body = {
            "status": "not_ready",
            "checks": checks,
            "error": {"type": "not_ready", "message": "; ".join(problems)},
        }
        response = jsonify(body)
        response.status_code = 503
        return response
    return jsonify({"status": "ready", "checks": checks})


def handle_unavailable(exc: Unavailable) -> Response:
    log.warning("storage unavailable", extra={"error": str(exc)})
    return error_response(503, "unavailable", "Storage is unavailable; try again shortly.")


def redis_store(settings: ConsumerSettings) -> EventStore:
    """The store the API reads: Redis at REDIS_URL (one node or a cluster, see
    `open_store`), with a short timeout (a read that waits longer is better answered 503)."""
    return open_store(
        settings, timeout_seconds=min(settings.redis_timeout_seconds, 2.0), writer=False
    )


def create_app(
    settings: ConsumerSettings | None = None,
    store: EventStore | None = None,
    status_file: StatusFile | None = None,
) -> Flask:
    """The read API. Without arguments, settings come from the environment, the store is
    Redis at REDIS_URL and the worker heartbeat is read from CONSUMER_STATUS_FILE (when
    set; `consumer-service` sets it for the API it starts)."""
    settings = settings or ConsumerSettings.from_env()
    if store is None:
        store = redis_store(settings)
    if status_file is None and os.environ.get("CONSUMER_STATUS_FILE"):
        status_file = StatusFile(os.environ["CONSUMER_STATUS_FILE"])
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = ReadState(settings, store)
    app.extensions[READINESS] = Readiness(settings, store, status_file)
    web.set_openapi(app, build_spec(settings, cluster=store.opaque_cursor).to_dict())
    web.register_error_handlers(app)
    web.install_auth(app, Authenticator(settings.auth, settings.parsed_api_keys()))
    app.register_error_handler(Unavailable, handle_unavailable)
    app.register_blueprint(events_bp)
    app.register_blueprint(erasure_bp)
    app.register_blueprint(web.ops_blueprint(ready))
    init_dashboard(app, settings, store)
    return app

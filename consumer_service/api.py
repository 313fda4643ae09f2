"""The read API of one replica: what the workers stored in Redis, plus health and metrics.

gunicorn 'consumer_service.api:create_app()'
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from marshmallow import ValidationError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from werkzeug.exceptions import HTTPException

from consumer_service import dashboard
from consumer_service import metrics as _worker_metrics  # noqa: F401  (names on /metrics)
from consumer_service.config import ConsumerSettings
from consumer_service.schemas import (
    ErrorSchema,
    EventPageSchema,
    HealthSchema,
    ProcessedQuerySchema,
    StatsSchema,
)
from consumer_service.status import StatusFile
from consumer_service.store import EventStore, PageQuery, RedisEventStore
from consumer_service.topics import metadata
from shared.errors import Unavailable
from shared.events import StoredEventSchema
from shared.kafka import AuthenticationWatch, KafkaAuthenticationFailed, client_config

log = logging.getLogger(__name__)

EXT = "consumer_service"

events_bp = Blueprint("events", __name__)
ops_bp = Blueprint("ops", __name__)


class Services:
    """What the views need, held in app.extensions."""

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
        topic = common.kafka_topic
        try:
            meta = metadata(self._admin, common, self._kafka_auth, 1.5, topic)
        except KafkaAuthenticationFailed as exc:
            return str(exc)
        except KafkaException as exc:
            return f"Kafka did not answer: {exc}"
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            return f"topic {topic} is not available"
        return None


def _services() -> Services:
    services: Services = current_app.extensions[EXT]
    return services


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
        store = RedisEventStore.from_url(
            settings.common.redis_url,
            settings.redis_prefix,
            settings.dedup_ttl_seconds,
            timeout_seconds=min(settings.redis_timeout_seconds, 2.0),
        )
    if status_file is None and os.environ.get("CONSUMER_STATUS_FILE"):
        status_file = StatusFile(os.environ["CONSUMER_STATUS_FILE"])
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXT] = Services(settings, store, status_file)
    app.register_blueprint(events_bp)
    app.register_blueprint(ops_bp)
    dashboard.init_app(app, settings, store)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Unavailable, _unavailable)
    app.register_error_handler(Exception, _unexpected)
    return app


def error_response(status: int, type_: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"type": type_, "message": message}}), status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    name = (exc.name or "error").lower().replace(" ", "_")
    response, status = error_response(exc.code or 500, name, exc.description or name)
    # The exception's own headers matter: a 405 must say which methods are allowed.
    for header, value in exc.get_headers():
        if header.lower() != "content-type":
            response.headers.add(header, value)
    return response, status


def _unavailable(exc: Unavailable) -> tuple[Response, int]:
    log.warning("storage unavailable", extra={"error": str(exc)})
    return error_response(503, "unavailable", "Storage is unavailable; try again shortly.")


def _unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("unexpected error", extra={"path": request.path})
    return error_response(500, "internal_error", "Internal error.")


def _format_errors(messages: Any) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{k}: {_format_errors(v)}" for k, v in messages.items())
    if isinstance(messages, list):
        return " ".join(str(m) for m in messages)
    return str(messages)


@events_bp.get("/events/processed")
def list_processed() -> Any:
    try:
        q = ProcessedQuerySchema().load(request.args.to_dict())
    except ValidationError as exc:
        return error_response(400, "invalid_query", _format_errors(exc.messages))
    if q.get("empty"):
        # A window no stored timestamp can fall in (until <= since, or wholly outside years
        # 0000-9999) is a valid question with an empty answer, not a bad query: the
        # OpenAPI document cannot state a rule between two parameters.
        total = _services().store.stats()["stored"]
        return jsonify({"events": [], "count": 0, "total": total, "next": None})
    query = PageQuery(
        limit=q["limit"],
        cursor=int(q.get("cursor", 0)),
        user_id=q.get("userId"),
        event_type=q.get("eventType"),
        since=q.get("since"),
        until=q.get("until"),
    )
    page = _services().store.page(query, _services().settings.max_scan_per_page)
    return jsonify(
        {
            "events": page.events,
            "count": len(page.events),
            "total": page.total,
            "next": None if page.next_cursor is None else str(page.next_cursor),
        }
    )


@events_bp.get("/events/processed/<event_id>")
def get_processed(event_id: str) -> Any:
    event = _services().store.get(event_id)
    if event is None:
        return error_response(404, "not_found", f"No processed event {event_id}.")
    return jsonify(event)


@events_bp.get("/stats")
def stats() -> Any:
    return jsonify(_services().store.stats())


@ops_bp.get("/health")
def health() -> Any:
    return jsonify({"status": "ok"})


@ops_bp.get("/ready")
def ready() -> Any:
    services = _services()
    checks: dict[str, str] = {}
    problems: list[str] = []
    checks["redis"] = "ok" if services.store.ping() else "unreachable"
    if checks["redis"] != "ok":
        problems.append("Redis does not answer")
    kafka_problem = services.kafka_ok()
    checks["kafka"] = "ok" if kafka_problem is None else "unreachable"
    if kafka_problem:
        problems.append(kafka_problem)
    if services.status_file is not None:
        status = services.status_file.read()
        worker_problem = (
            "the worker has not reported yet"
            if status is None
            else status.problem(services.settings.stall_seconds, time.time())
        )
        checks["worker"] = "ok" if worker_problem is None else "not_ready"
        if worker_problem:
            problems.append(worker_problem)
    if problems:
        body = {
            "status": "not_ready",
            "checks": checks,
            "error": {"type": "not_ready", "message": "; ".join(problems)},
        }
        return jsonify(body), 503
    return jsonify({"status": "ready", "checks": checks})


@ops_bp.get("/metrics")
def prometheus_metrics() -> Response:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    return Response(data, mimetype=CONTENT_TYPE_LATEST)


@ops_bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(build_spec().to_dict())


def build_spec() -> APISpec:
    """The OpenAPI 3 document, generated from the marshmallow schemas."""
    spec = APISpec(
        title="User-activity consumer: read API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Events processed from Kafka and stored in Redis, in processing order."
        },
    )
    spec.components.schema("StoredEvent", schema=StoredEventSchema)
    spec.components.schema("EventPage", schema=EventPageSchema)
    spec.components.schema("Stats", schema=StatsSchema)
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("Health", schema=HealthSchema)

    def resp(description: str, schema: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    err400 = resp("Invalid query", "Error")
    err503 = resp("Redis unavailable", "Error")
    spec.path(
        path="/events/processed",
        operations={
            "get": {
                "summary": "Processed events, oldest first, paged by cursor",
                "description": (
                    "Every parameter is optional. An empty value (`?until=`) is invalid "
                    "for every parameter and answered 400, as is an unknown parameter. "
                    "`since` and `until` select `since <= timestamp < until`; a window "
                    "that can hold no event (`until` not after `since`) is an empty page."
                ),
                "parameters": [{"in": "query", "schema": ProcessedQuerySchema}],
                "responses": {"200": resp("A page", "EventPage"), "400": err400, "503": err503},
            }
        },
    )
    spec.path(
        path="/events/processed/{eventId}",
        operations={
            "get": {
                "summary": "One processed event",
                "parameters": [
                    {
                        "in": "path",
                        "name": "eventId",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": resp("The event", "StoredEvent"),
                    "404": resp("Not processed (or past retention)", "Error"),
                    "503": err503,
                },
            }
        },
    )
    spec.path(
        path="/stats",
        operations={
            "get": {
                "summary": "Totals",
                "responses": {"200": resp("Totals", "Stats"), "503": err503},
            }
        },
    )
    spec.path(
        path="/health",
        operations={"get": {"summary": "Liveness", "responses": {"200": resp("Alive", "Health")}}},
    )
    spec.path(
        path="/ready",
        operations={
            "get": {
                "summary": "Readiness: Redis, Kafka and the worker",
                "responses": {"200": resp("Ready", "Health"), "503": resp("Not ready", "Health")},
            }
        },
    )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    )
    dashboard.document(spec)
    return spec

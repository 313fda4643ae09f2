"""The application factory: `create_app(settings=None)` builds one WSGI app per process."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, jsonify, request

from producer_service import metrics
from producer_service.config import ProducerSettings
from producer_service.docs import bp as docs_bp
from producer_service.errors import register_error_handlers
from producer_service.events import bp as events_bp
from producer_service.openapi import build_spec
from producer_service.publisher import EventPublisher, KafkaEventPublisher
from producer_service.quotas import Quota
from producer_service.schemas import BatchInputSchema
from producer_service.state import ProducerState, install, state, state_of
from shared import web
from shared.auth import Authenticator
from shared.events import EventInputSchema
from shared.web import error_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

READY_TIMEOUT = 1.0


def ready() -> Response:
    """Ready when Kafka answers a metadata request for the topic within READY_TIMEOUT."""
    readiness = state().publisher.ready(READY_TIMEOUT)
    if readiness.ok:
        return jsonify(status="ready")
    return error_response(
        503,
        "unavailable",
        f"{readiness.reason or 'Kafka is not available'}.",
        headers={"Retry-After": "1"},
    )


# Where `_timed` leaves the request's start in the WSGI environ.
STARTED = "producer.started"


def _timed(wsgi_app: WSGIApplication) -> WSGIApplication:
    """`wsgi_app`, noting when each request arrived; cheaper than a `before_request` hook
    writing to `g`, which costs two context-local look-ups per request."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[STARTED] = time.perf_counter()
        return wsgi_app(environ, start_response)

    return app


def _count_request(response: Response) -> Response:
    # The route template, not the path, so unknown URLs cannot explode label cardinality.
    rule = request.url_rule
    route = rule.rule if rule is not None else "<unmatched>"
    started = request.environ.get(STARTED)
    metrics.count_request(
        route,
        request.method,
        response.status_code,
        None if started is None else time.perf_counter() - started,
    )
    return response


def create_app(
    settings: ProducerSettings | None = None, publisher: EventPublisher | None = None
) -> Flask:
    """Build the producer app. Settings default to the environment; the publisher defaults
    to a `KafkaEventPublisher`, whose Kafka client starts on first use in this process."""
    settings = ProducerSettings.from_env() if settings is None else settings
    app = Flask(__name__)
    # Werkzeug refuses larger bodies before reading them; the events view narrows it.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_batch_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    install(app, _new_state(app, settings, publisher))
    web.install_auth(app, Authenticator(settings.auth, settings.parsed_api_keys()))
    web.set_openapi(app, build_spec(settings))
    app.wsgi_app = _timed(app.wsgi_app)  # type: ignore[method-assign,assignment]
    app.after_request(_count_request)
    register_error_handlers(app)
    app.register_blueprint(events_bp)
    app.register_blueprint(web.ops_blueprint(ready))
    app.register_blueprint(docs_bp)
    return app


def _new_state(
    app: Flask, settings: ProducerSettings, publisher: EventPublisher | None
) -> ProducerState:
    return ProducerState(
        settings=settings,
        publisher=KafkaEventPublisher(settings) if publisher is None else publisher,
        input_schema=EventInputSchema(settings.event_types, settings.max_payload_bytes),
        batch_schema=BatchInputSchema(
            settings.event_types, settings.max_payload_bytes, settings.max_batch_events
        ),
        quota=Quota(app, settings) if settings.rate_limits else None,
    )


def publisher_of(app: Flask) -> EventPublisher:
    """The publisher an app built by `create_app` uses (for shutdown hooks and tests)."""
    return state_of(app).publisher

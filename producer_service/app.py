"""The application factory: `create_app(settings=None)` builds one WSGI app per process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, jsonify, request

from producer_service import metrics
from producer_service.config import ProducerSettings
from producer_service.docs import bp as docs_bp
from producer_service.encryption import EncryptingPublisher, data_keys_for, key_client
from producer_service.errors import register_error_handlers
from producer_service.events import bp as events_bp
from producer_service.fast_path import SingleEventFastPath
from producer_service.openapi import build_spec
from producer_service.publisher import EventPublisher, KafkaEventPublisher
from producer_service.quotas import Quota
from producer_service.schemas import BatchInputSchema
from producer_service.state import ProducerState, install, state, state_of
from producer_service.tracking import bp as tracking_bp
from shared import web
from shared.auth import Authenticator
from shared.events import EventInputSchema
from shared.web import error_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

READY_TIMEOUT = 1.0


# What /ready says for each state of `Readiness`: stable words only, since it answers
# anyone who asks; the full reason goes to the log.
READY_MESSAGES = {
    "unreachable": "Kafka did not answer for the topic in time.",
    "auth_failed": "Kafka refused the producer's credentials.",
    "client_failed": "The Kafka producer failed; a new one is starting.",
    "closed": "The producer is shutting down.",
}


def ready() -> Response:
    """Ready when Kafka answers a metadata request for the topic within READY_TIMEOUT.
    Not ready: 503 naming the state (`checks.kafka`); the reason goes to the log, once
    per change of reason in this process."""
    readiness = state().publisher.ready(READY_TIMEOUT)
    if readiness.ok:
        return jsonify(status="ready")
    _not_ready_log.note(readiness.reason)
    return error_response(
        503,
        "unavailable",
        READY_MESSAGES.get(readiness.state, "Kafka is not available."),
        headers={"Retry-After": "1"},
        checks={"kafka": readiness.state},
    )


class _ChangeLog:
    """Logs why /ready fails when the reason differs from the last one logged in this
    process: a probe every second must not fill the log with the same line. (Two
    threads may both log one change; nothing worse.)"""

    def __init__(self) -> None:
        self._last: str | None = None

    def note(self, reason: str | None) -> None:
        if reason != self._last:
            self._last = reason
            logger.warning("not ready", extra={"reason": reason})


_not_ready_log = _ChangeLog()


def _timed(wsgi_app: WSGIApplication) -> WSGIApplication:
    """`wsgi_app`, noting when each request arrived; cheaper than a `before_request` hook
    writing to `g`, which costs two context-local look-ups per request."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[metrics.STARTED] = time.perf_counter()
        return wsgi_app(environ, start_response)

    return app


def _request_counter(app: Flask) -> Callable[[Response], Response]:
    """The `after_request` hook counting each answer in the HTTP metrics, with labels
    from fixed sets: the route template (unknown URLs are "<unmatched>") and the method
    when some route of `app` serves it, else "other". Call after every route is added."""
    served = frozenset(method for rule in app.url_map.iter_rules() for method in rule.methods or ())

    def count(response: Response) -> Response:
        rule = request.url_rule
        route = rule.rule if rule is not None else "<unmatched>"
        started = request.environ.get(metrics.STARTED)
        metrics.count_request(
            route,
            metrics.method_label(request.method, served),
            response.status_code,
            None if started is None else time.perf_counter() - started,
        )
        return response

    return count


def create_app(
    settings: ProducerSettings | None = None,
    publisher: EventPublisher | None = None,
    *,
    fast_path: bool = True,
) -> Flask:
    """Build the producer app. Settings default to the environment; the publisher defaults
    to a `KafkaEventPublisher`, whose Kafka client starts on first use in this process.
    `fast_path=False` serves every request through Flask (producer_service.fast_path;
    tests compare both)."""
    settings = ProducerSettings.from_env() if settings is None else settings
    app = Flask(__name__)
    # Werkzeug refuses larger bodies before reading them; the events view narrows it.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_batch_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    metrics.label_event_types(name for name in settings.event_types if name != "*")
    producer_state = _new_state(app, settings, publisher)
    install(app, producer_state)
    authenticator = Authenticator(settings.auth, settings.parsed_api_keys())
    web.install_auth(app, authenticator)
    web.set_openapi(app, build_spec(settings))
    wsgi_app: WSGIApplication = app.wsgi_app
    if fast_path and producer_state.quota is None:
        wsgi_app = SingleEventFastPath(wsgi_app, producer_state, authenticator)
    app.wsgi_app = _timed(wsgi_app)  # type: ignore[method-assign,assignment]
    register_error_handlers(app)
    app.register_blueprint(events_bp)
    app.register_blueprint(tracking_bp)
    app.register_blueprint(web.ops_blueprint(ready, before_metrics=metrics.flush))
    app.register_blueprint(docs_bp)
    app.after_request(_request_counter(app))
    return app


def _new_state(
    app: Flask, settings: ProducerSettings, publisher: EventPublisher | None
) -> ProducerState:
    publisher = KafkaEventPublisher(settings) if publisher is None else publisher
    if settings.encryption.enabled:
        # Every intake path publishes through it: none can send a plain payload.
        assert settings.rate_limit_redis_url is not None  # required by the settings
        keys = data_keys_for(settings, key_client(settings.rate_limit_redis_url))
        publisher = EncryptingPublisher(publisher, keys)
    return ProducerState(
        settings=settings,
        publisher=publisher,
        input_schema=EventInputSchema(settings.event_types, settings.max_payload_bytes),
        batch_schema=BatchInputSchema(
            settings.event_types, settings.max_payload_bytes, settings.max_batch_events
        ),
        quota=Quota(app, settings) if settings.rate_limits else None,
    )


def publisher_of(app: Flask) -> EventPublisher:
    """The publisher an app built by `create_app` uses (for shutdown hooks and tests)."""
    return state_of(app).publisher

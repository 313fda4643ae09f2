"""The dashboard's views: `GET /dashboard`, a page that polls `GET /dashboard/data`, and
the page's script and stylesheet.

Everything the page needs is package data in `consumer_service/api/static/`, served by this
blueprint: no CDN, no other origin (the Content-Security-Policy says so to the browser too).
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from importlib import resources
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from consumer_service.api.dashboard.kafka import KafkaGroupView, KafkaSnapshot
from consumer_service.api.dashboard.reads import RedisDashboardReads
from consumer_service.api.schemas import RECENT_EVENTS, DashboardDataSchema
from consumer_service.config import ConsumerSettings
from consumer_service.storage import EventStore
from shared import web
from shared.auth import READ
from shared.errors import Unavailable

EXT = "consumer_service.api.dashboard"

REDIS_TIMEOUT_SECONDS = 1.0
# What a reader without credentials is told of a Redis failure.
REDIS_SILENT = "Redis did not answer."
# How often the page asks for /dashboard/data (it says so in every answer).
POLL_SECONDS = 1.0

# The page and its assets come from this origin only; anything else the browser refuses
# (and reports on its console, which the browser tests watch).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}

dashboard_bp = Blueprint("dashboard", __name__)


class DashboardState:
    """What the dashboard's views need, held in app.extensions[EXT]."""

    def __init__(self, settings: ConsumerSettings, store: EventStore) -> None:
        self.settings = settings
        self.store = store
        self.kafka = KafkaGroupView(settings)
        self._reads: RedisDashboardReads | None = None

    @property
    def reads(self) -> RedisDashboardReads:
        if self._reads is None:
            # Created on first use, like the AdminClient: after gunicorn's fork.
            s = self.settings
            self._reads = RedisDashboardReads.open(
                s, min(s.redis_timeout_seconds, REDIS_TIMEOUT_SECONDS)
            )
        return self._reads

    def close(self) -> None:
        """Closes the Redis connections and the Kafka client (tests build many apps;
        gunicorn never calls it)."""
        self.kafka.close()
        if self._reads is not None:
            self._reads.close()


def init_app(app: Flask, settings: ConsumerSettings, store: EventStore) -> None:
    """Serve the dashboard from `app`, reading `store` and the Redis and Kafka of
    `settings`."""
    app.extensions[EXT] = DashboardState(settings, store)
    app.register_blueprint(dashboard_bp)


def state_of(app: Flask) -> DashboardState:
    state: DashboardState = app.extensions[EXT]
    return state


@functools.cache
def _static(name: str) -> bytes:
    # Read once per process: a few KiB, and a file handle per request would be handed to
    # whatever WSGI server to close.
    return (resources.files("consumer_service.api") / "static" / name).read_bytes()


def _serve(name: str, mimetype: str) -> Response:
    response = Response(_static(name), mimetype=mimetype)
    # Revalidated on every load (ETag): an upgraded replica's page never runs old code.
    response.headers["Cache-Control"] = "no-cache"
    response.add_etag()
    response.make_conditional(request)
    return response


@dashboard_bp.get("/dashboard")
def page() -> Response:
    response = _serve("dashboard.html", "text/html")
    response.headers["Content-Security-Policy"] = CSP
    return response


@dashboard_bp.get("/dashboard/dashboard.js")
def script() -> Response:
    return _asset("dashboard.js")


@dashboard_bp.get("/dashboard/dashboard.css")
def stylesheet() -> Response:
    return _asset("dashboard.css")


def _asset(name: str) -> Response:
    return _serve(name, ASSETS[name])


@dashboard_bp.get("/dashboard/data")
def data() -> Response:
    """The figures of DashboardDataSchema, never cached; needs `events:read` when the API
    has credentials configured. Once let in, always 200: a source that does not answer is
    reported in its part of the answer. A request let in without a credential (an open
    API) gets members without their host and errors in fixed words: broker addresses,
    SASL user names and raw error texts are for authenticated readers only."""
    detailed = web.authorize(READ) is not None
    state = state_of(current_app)
    settings = state.settings
    kafka = state.kafka.snapshot()
    body = {
        "generatedAt": time.time(),
        "topic": settings.common.kafka_topic,
        "group": settings.consumer_group,
        "pollSeconds": POLL_SECONDS,
        **_redis_figures(state, detailed),
        "kafka": kafka if detailed else _terse(kafka),
    }
    response = jsonify(DashboardDataSchema().dump(body))
    response.headers["Cache-Control"] = "no-store"
    return response


def _terse(kafka: KafkaSnapshot) -> KafkaSnapshot:
    members = tuple(replace(m, host=None) for m in kafka.members)
    return replace(kafka, error=kafka.summary, members=members)


def _redis_figures(state: DashboardState, detailed: bool) -> dict[str, Any]:
    """`stats`, `redis` and `recent` of the answer (`redis` keyed as the schema's
    attributes); the error's own words only when `detailed`."""
    try:
        stats = state.store.stats()
        memory = state.reads.memory()
        recent = state.reads.newest(RECENT_EVENTS)
    except Unavailable as exc:
        return {
            "stats": None,
            "redis": {
                "error": str(exc) if detailed else REDIS_SILENT,
                "used_bytes": None,
                "max_bytes": None,
            },
            "recent": [],
        }
    return {
        "stats": stats,
        "redis": {"error": None, "used_bytes": memory.used_bytes, "max_bytes": memory.max_bytes},
        "recent": recent,
    }

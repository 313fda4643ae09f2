"""The read API's application factory: `create_app()` builds one WSGI app per process.

    gunicorn 'consumer_service.api.app:create_app()'

(`consumer-service` starts it next to its worker, with consumer_service/gunicorn.conf.py.)
"""

from __future__ import annotations

import logging
import os

from flask import Flask, Response

from consumer_service import metrics as _worker_metrics  # noqa: F401  (names on /metrics)
from consumer_service.api.dashboard.views import init_app as init_dashboard
from consumer_service.api.erasure import bp as erasure_bp
from consumer_service.api.events import EXTENSION, ReadState
from consumer_service.api.events import bp as events_bp
from consumer_service.api.openapi import build_spec
from consumer_service.api.payloads import PayloadOpener
from consumer_service.api.readiness import READINESS, Readiness, ready
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.shredding import data_keys, key_client
from consumer_service.pipeline.status import StatusFile
from consumer_service.storage import EventStore, open_store
from shared import web
from shared.auth import Authenticator
from shared.errors import Unavailable
from shared.web import error_response

log = logging.getLogger(__name__)


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
    payloads = (
        PayloadOpener(data_keys(settings, key_client(settings)))
        if settings.encryption.enabled
        else None
    )
    app.extensions[EXTENSION] = ReadState(settings, store, payloads)
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

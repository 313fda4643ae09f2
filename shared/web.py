"""The web plumbing both HTTP APIs share: JSON errors, the error and health schemas, the
OpenAPI scaffolding, the operational routes and the gunicorn hooks.

This is the one module of `shared` that imports Flask. Nothing else in `shared` imports
it, so the consumer's worker and the schema modules stay free of Flask; it lives here
rather than in a package of its own because both services already depend on `shared`.

prometheus_client is imported inside the functions that need it: a gunicorn.conf.py
imports this module in the master before `GunicornHooks.start` sets
PROMETHEUS_MULTIPROC_DIR, and prometheus_client fixes its multiprocess mode at import.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from shared.auth import Authenticator, Forbidden, Principal, Unauthenticated
from shared.event_schemas import event_json_schema, versions
from shared.json_codec import compact_json
from shared.logs import configure_logging, gunicorn_logger_class

logger = logging.getLogger(__name__)

# Where the app keeps its OpenAPI document (a dict), served by /openapi.json.
OPENAPI = "web.openapi"
API_VERSION = "1.0.0"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


# --- errors --------------------------------------------------------------------------


def error_response(
    status: int, type_: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    """The one error answer: `{"error": {"type", "message", **extra}}` with `status` and
    `headers`. Never raises, whatever `extra` holds (see `_encode_error`)."""
    body = {"error": {"type": type_, "message": message, **extra}}
    response = Response(_encode_error(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _encode_error(body: Mapping[str, Any]) -> bytes:
    """`body` as JSON, whatever it holds: error messages echo client input (unknown field
    names, values), and an error handler that raises turns a 400 into a 500."""
    try:
        return compact_json(body)
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return json.dumps(_printable(body), separators=(",", ":"), default=str).encode()
    except (ValueError, TypeError, RecursionError):
        error = body.get("error", {})
        fallback = {"error": {"type": str(error.get("type", "error")), "message": "Bad input."}}
        return json.dumps(fallback, default=str).encode()


def _printable(value: Any, depth: int = 0) -> Any:
    # Lone surrogates become backslash escapes, non-finite floats strings: always JSON.
    if depth > 50:
        return "..."
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(_printable(k, depth + 1)): _printable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v, depth + 1) for v in value]
    return value


def _http_type(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def handle_http(exc: HTTPException) -> Response:
    """Werkzeug's HTTP errors (404, 405, 413, a rate limit's 429...) as JSON, keeping the
    exception's own headers (405's Allow, Retry-After) but not its HTML content type."""
    response = error_response(exc.code or 500, _http_type(exc), exc.description or exc.name)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers.add(name, value)
    return response


def handle_unexpected(exc: Exception) -> Response:
    """A 500 whose details go to the log, never to the client."""
    logger.exception("unhandled error", extra={"path": request.path})
    return error_response(500, "internal_error", "Internal server error.")


def register_error_handlers(app: Flask) -> None:
    """Answer every HTTP error and every unexpected exception with JSON. A service adds
    handlers for its own errors; Flask picks the most specific class for each."""
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(Exception, handle_unexpected)


# --- access control ------------------------------------------------------------------

# Where the app keeps its `Authenticator`, and where a let-in request's `Principal` goes
# (the WSGI environ: cheaper than `g`, and readable by any layer of the request).
AUTH = "web.auth"
PRINCIPAL = "web.principal"


def install_auth(app: Flask, authenticator: Authenticator) -> None:
    """Check credentials with `authenticator` wherever a view asks (`authorize`), and
    answer its refusals: 401 with a `WWW-Authenticate: Bearer` challenge, 403 naming
    the missing scope, both in the JSON error shape."""
    app.extensions[AUTH] = authenticator
    app.register_error_handler(Unauthenticated, handle_unauthenticated)
    app.register_error_handler(Forbidden, handle_forbidden)


def authorize(scope: str, api_key: str | None = None) -> Principal | None:
    """Let the current request in when its credential grants `scope`, noting its principal
    in the environ (`PRINCIPAL`); None, letting every request in, when the app has no
    credentials configured. `api_key`: a key the request presents another way (the
    tracking API's Basic auth user name), checked instead of its headers as an X-API-Key
    is. Raises `Unauthenticated` or `Forbidden`."""
    authenticator: Authenticator = current_app.extensions[AUTH]
    if not authenticator.enabled:
        return None
    headers = request.headers
    if api_key is None:
        principal = authenticator.authenticate(
            headers.get("Authorization"), headers.get("X-API-Key")
        )
    else:
        principal = authenticator.authenticate(None, api_key)
    principal.require(scope)
    request.environ[PRINCIPAL] = principal
    return principal


def scope_guard(scope: str) -> Callable[[], None]:
    """A `before_request` function for a blueprint whose every route needs `scope`."""

    def guard() -> None:
        authorize(scope)

    return guard


def principal() -> Principal | None:
    """Who the current request was let in as; None when the app is open."""
    found: Principal | None = request.environ.get(PRINCIPAL)
    return found


def handle_unauthenticated(exc: Unauthenticated) -> Response:
    challenge = 'Bearer error="invalid_token"' if exc.invalid_token else "Bearer"
    return error_response(401, "unauthorized", str(exc), headers={"WWW-Authenticate": challenge})


def handle_forbidden(exc: Forbidden) -> Response:
    challenge = f'Bearer error="insufficient_scope", scope="{exc.scope}"'
    return error_response(403, "forbidden", str(exc), headers={"WWW-Authenticate": challenge})


# --- schemas -------------------------------------------------------------------------


class ErrorDetailSchema(Schema):
    """What every error answer holds; a service may subclass it to document its extras."""

    type = fields.String(required=True)
    message = fields.String(required=True)


class ErrorSchema(Schema):
    """Every error answer: `{"error": {"type", "message", ...}}`."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


# --- OpenAPI -------------------------------------------------------------------------


def ref(name: str) -> dict[str, Any]:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: str, description: str) -> dict[str, Any]:
    """An OpenAPI response whose JSON body is the component schema `schema`."""
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def text_response(description: str, mimetype: str = "text/plain") -> dict[str, Any]:
    """An OpenAPI response whose body is text of `mimetype` (an HTML page, metrics)."""
    return {"description": description, "content": {mimetype: {"schema": {"type": "string"}}}}


def new_spec(
    title: str,
    description: str,
    *,
    error_schema: type[Schema] = ErrorSchema,
    health_schema: type[Schema] = HealthSchema,
) -> APISpec:
    """An OpenAPI 3.0.3 document generated from marshmallow schemas, with the `Error` and
    `Health` components registered (a service may pass subclasses that say more). Add the
    service's own components and paths, then `document_ops` last."""
    spec = APISpec(
        title=title,
        version=API_VERSION,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": description},
    )
    spec.components.schema("Error", schema=error_schema)
    spec.components.schema("Health", schema=health_schema)
    return spec


def security(spec: APISpec, *, api_keys: bool, jwt: bool) -> list[dict[str, list[str]]]:
    """Register the security schemes of an app that accepts API keys and/or JWTs, and
    return the `security` requirement of its guarded operations: `X-API-Key`, or
    `Authorization: Bearer` with a JWT or a key. Empty (no scheme) for an open app."""
    if not (api_keys or jwt):
        return []
    bearer = "a JWT" + (" or an API key" if api_keys else "") if jwt else "an API key"
    spec.components.security_scheme(
        "Bearer",
        {
            "type": "http",
            "scheme": "bearer",
            **({"bearerFormat": "JWT"} if jwt else {}),
            "description": f"`Authorization: Bearer` with {bearer}.",
        },
    )
    if not api_keys:
        return [{"Bearer": []}]
    spec.components.security_scheme(
        "ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    )
    return [{"ApiKey": []}, {"Bearer": []}]


def auth_responses(scope: str, guarded: bool) -> dict[str, Any]:
    """The 401 and 403 answers of an operation that needs `scope`, when the app is
    `guarded` (a document for an open app promises none)."""
    if not guarded:
        return {}
    challenge = {
        "description": '`Bearer`, with `error="invalid_token"` when a token was refused.',
        "schema": {"type": "string"},
    }
    return {
        "401": {
            **json_response("Error", "No credential, or one that is not valid."),
            "headers": {"WWW-Authenticate": challenge},
        },
        "403": json_response("Error", f"The credential is valid but does not grant {scope}."),
    }


def document_ops(spec: APISpec, ready: Mapping[str, Any]) -> None:
    """Document /health and /metrics as `ops_blueprint` serves them, and /ready with the
    service's own operation object `ready` (what it checks, what it answers)."""
    spec.path(
        path="/health",
        operations={
            "get": {
                "summary": "The process is alive",
                "responses": {"200": json_response("Health", "Alive.")},
            }
        },
    )
    spec.path(path="/ready", operations={"get": dict(ready)})
    spec.path(
        path="/schemas/events/v{version}.json",
        operations={
            "get": {
                "summary": "JSON Schema of the event record, per schema version",
                "parameters": [
                    {
                        "in": "path",
                        "name": "version",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The JSON Schema (2020-12) of that version's record.",
                        "content": {"application/schema+json": {"schema": {"type": "object"}}},
                    },
                    "404": json_response("Error", "No such version."),
                },
            }
        },
    )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": text_response("Text exposition format.")},
            }
        },
    )


# --- operational routes --------------------------------------------------------------


def ops_blueprint(
    ready: Callable[[], ResponseReturnValue], before_metrics: Callable[[], None] | None = None
) -> Blueprint:
    """A new blueprint "ops" with /health, /ready (the service's `ready` view), /metrics
    and /openapi.json (the document `set_openapi` gave the app). New on each call, so a
    service may add routes to it before registering it. `before_metrics`, when given,
    runs before each /metrics answer (a service that counts in memory publishes there)."""
    bp = Blueprint("ops", __name__)
    bp.add_url_rule("/health", "health", health, methods=["GET"])
    bp.add_url_rule("/ready", "ready", ready, methods=["GET"])

    def metrics_view() -> Response:
        if before_metrics is not None:
            before_metrics()
        return metrics()

    bp.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    bp.add_url_rule("/openapi.json", "openapi", openapi, methods=["GET"])
    bp.add_url_rule(
        "/schemas/events/v<int:version>.json", "event_schema", event_schema, methods=["GET"]
    )
    return bp


def set_openapi(app: Flask, document: Mapping[str, Any]) -> None:
    """Serve `document` (built once, at app creation) at /openapi.json."""
    app.extensions[OPENAPI] = document


def health() -> Response:
    """Alive: answers without touching Kafka or Redis, so a slow dependency does not get
    the process restarted."""
    return jsonify(status="ok")


def openapi() -> Response:
    return jsonify(current_app.extensions[OPENAPI])


def event_schema(version: int) -> Response:
    """The JSON Schema of the event record's schema `version`; 404 for another."""
    document = event_json_schema(version)
    if document is None:
        return error_response(
            404, "not_found", f"No event schema version {version}; there are {versions()}."
        )
    return Response(json.dumps(document), mimetype="application/schema+json")


def multiprocess_dir() -> str | None:
    """The directory prometheus_client aggregates processes through, or None. An empty
    value counts as unset: no collector can read a directory named ""."""
    return os.environ.get(MULTIPROC_ENV) or None


def metrics() -> Response:
    """Every process's metrics under PROMETHEUS_MULTIPROC_DIR (gunicorn workers, the
    consumer's worker), else this process's."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = REGISTRY
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


# --- gunicorn ------------------------------------------------------------------------


@dataclass(frozen=True)
class GunicornHooks:
    """The gunicorn hooks both services use; a gunicorn.conf.py assigns them by name
    (`child_exit = hooks.child_exit`) next to its own."""

    service: str
    log_level: str
    # The metrics directory `start` made, removed by `on_exit`; None when one was given.
    owned_metrics_dir: str | None

    @classmethod
    def start(cls, service: str, log_level: str) -> GunicornHooks:
        """Call at the top of gunicorn.conf.py, in the master, before anything imports
        prometheus_client: points PROMETHEUS_MULTIPROC_DIR at a new directory unless one
        is given, so /metrics adds up every worker."""
        owned = None
        if multiprocess_dir() is None:
            owned = tempfile.mkdtemp(prefix=f"{service}-metrics-")
            os.environ[MULTIPROC_ENV] = owned
        return cls(service, log_level, owned)

    @property
    def logger_class(self) -> type:
        """gunicorn's own lines as JSON, from its first one."""
        return gunicorn_logger_class(self.log_level, service=self.service)

    def post_fork(self, server: Any, worker: Any) -> None:
        configure_logging(self.log_level, service=self.service)

    def child_exit(self, server: Any, worker: Any) -> None:
        """Drops the dead worker's live gauges from the multiprocess directory."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

    def on_exit(self, server: Any) -> None:
        if self.owned_metrics_dir is not None:
            shutil.rmtree(self.owned_metrics_dir, ignore_errors=True)

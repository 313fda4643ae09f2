"""`POST /events/generate` without Flask's request machinery, for the requests that need
nothing else.

This is the route every first load test hits, and per request Flask's context, URL
matching, `Request`/`Response` objects and hooks cost about as much as everything the
route does (docs/performance.md). `SingleEventFastPath` wraps the Flask app as WSGI
middleware. A request to that route takes the fast path when its body can be handled
entirely by the same functions the view calls:
- the body is declared as `application/json` with a Content-Length within the limit;
- it parses to a JSON object that `shared.events.EventInputSchema.load_fast` accepts;
- its Idempotency-Key, if any, is well formed.

Everything else goes to the Flask app untouched (the body read here is handed on), so
every refusal, every 4xx and its words come from one place: the view. The fast path
only ever answers 201, or the 503 that the view's `Unavailable` would produce.

With credentials configured, a request is taken only when its credential grants
`events:write` (the same `shared.auth.Authenticator` the Flask hook asks); any other goes
to the view, which answers the 401 or 403. The fast path is off when a quota is
configured: the quota runs as a Flask hook.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response

from producer_service import metrics
from producer_service.errors import error_response, unavailable_response
from producer_service.events import IDEMPOTENCY_KEY_MAX, logged_facts
from producer_service.state import ProducerState
from shared.auth import WRITE, Authenticator, Unauthenticated
from shared.errors import Unavailable
from shared.events import enrich, record_json
from shared.json_codec import json_problem, parse_json

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("producer_service.events")

PATH = "/events/generate"
# What Flask's view answers a 201 with, for the same bytes.
_CREATED = "201 CREATED"
_JSON = ("Content-Type", "application/json")


class SingleEventFastPath:
    """WSGI middleware: answers `POST /events/generate` itself when it can (see the
    module's docstring), hands every other request to `app`."""

    def __init__(
        self, app: WSGIApplication, state: ProducerState, authenticator: Authenticator
    ) -> None:
        self._app = app
        self._authenticator = authenticator if authenticator.enabled else None
        self._publisher = state.publisher
        self._schema = state.input_schema
        self._max_bytes = state.settings.max_event_body_bytes
        self._ack_timeout = state.settings.ack_timeout
        self._log_events = state.settings.log_events

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] != PATH or environ["REQUEST_METHOD"] != "POST":
            return self._app(environ, start_response)
        accepted = self._accept(environ)
        if accepted is None:
            return self._app(environ, start_response)
        try:
            return self._publish(environ, start_response, *accepted)
        except Unavailable as exc:
            return self._answer(environ, start_response, unavailable_response(PATH, str(exc)))
        except Exception:
            # What the app's handler for the unexpected does: details to the log only.
            logger.exception("unhandled error", extra={"path": PATH})
            response = error_response(500, "internal_error", "Internal server error.")
            return self._answer(environ, start_response, response)

    def _answer(
        self, environ: WSGIEnvironment, start_response: StartResponse, response: Response
    ) -> Iterable[bytes]:
        started = environ.get(metrics.STARTED) or time.perf_counter()
        metrics.count_request(PATH, "POST", response.status_code, time.perf_counter() - started)
        return response(environ, start_response)

    def _accept(self, environ: WSGIEnvironment) -> tuple[dict[str, Any], bytes, str | None] | None:
        """The loaded event, its payload's JSON and its Idempotency-Key; or None when the
        view must decide, with the body (if read) put back for it."""
        authenticator = self._authenticator
        if authenticator is not None and not _allowed(authenticator, environ):
            return None
        mimetype = environ.get("CONTENT_TYPE", "")
        if mimetype != "application/json" and not mimetype.startswith("application/json;"):
            return None
        length = environ.get("CONTENT_LENGTH", "")
        # ASCII digits only (`isdigit` admits "²", which `int` refuses), and few of them.
        if not (length.isascii() and length.isdigit() and len(length) <= 12):
            return None
        if int(length) > self._max_bytes:
            return None
        if "HTTP_TRANSFER_ENCODING" in environ:
            return None
        try:
            raw = environ["wsgi.input"].read(int(length))
        except Exception:
            # The client went away mid-body (gunicorn's parser errors are not all
            # OSErrors): the view, finding the body short, answers its 400.
            raw = b""
        # From here on the view needs the body back if it is to decide.
        environ["wsgi.input"] = io.BytesIO(raw)
        if len(raw) != int(length):
            return None
        key = environ.get("HTTP_IDEMPOTENCY_KEY")
        if key is not None:
            key = key.strip()
            if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
                return None
        try:
            body, strict = parse_json(raw)
        except (ValueError, RecursionError):
            return None
        if type(body) is not dict or json_problem(body, strict=strict) is not None:
            return None
        loaded = self._schema.load_fast(body)
        if loaded is None:
            return None
        return loaded[0], loaded[1], key

    def _publish(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        event: dict[str, Any],
        payload_json: bytes,
        key: str | None,
    ) -> Iterable[bytes]:
        """What the view does with an accepted event: publish, wait for the ack, answer."""
        started = environ.get(metrics.STARTED) or time.perf_counter()
        record = enrich(event, idempotency_key=key)
        value = record_json(record, payload_json)
        (delivery,) = self._publisher.publish([record], self._ack_timeout, [value])
        metrics.observe_deliveries((delivery,), (record["eventType"],))
        if not delivery.ok:
            logger.warning(
                "event not acknowledged",
                extra={**logged_facts(record), "reason": delivery.reason},
            )
            raise Unavailable(f"Kafka did not acknowledge the event: {delivery.error}")
        if self._log_events:
            logger.info(
                "event published",
                extra={
                    **logged_facts(record),
                    "partition": delivery.partition,
                    "offset": delivery.offset,
                },
            )
        start_response(_CREATED, [_JSON, ("Content-Length", str(len(value)))])
        metrics.count_request(PATH, "POST", 201, time.perf_counter() - started)
        return (value,)


def _allowed(authenticator: Authenticator, environ: WSGIEnvironment) -> bool:
    """Whether the request's credential grants `events:write`: the Flask hook's check
    (shared.web.authorize) without its answers, which the view gives, asking again."""
    try:
        principal = authenticator.authenticate(
            environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY")
        )
    except Unauthenticated:
        return False
    return WRITE in principal.scopes

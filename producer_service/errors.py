"""Every error the API answers is JSON: `{"error": {"type", "message", ...}}`.

Client mistakes map to 4xx with the reason, Kafka trouble to 503 (retry), and anything
unexpected to a 500 whose details go to the log, never to the client.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Flask, Response, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from shared.errors import InvalidEvent, Unavailable
from shared.events import compact_json

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying after a 503.
RETRY_AFTER = "1"


class InvalidBatch(InvalidEvent):
    """A batch with invalid items; `items` lists `{"index", "fields"}` per bad item, or is
    empty when the envelope itself is wrong (then `messages` says how). `omitted` counts
    bad items left out of `items` to keep the answer small."""

    def __init__(
        self,
        message: str,
        items: Sequence[Mapping[str, Any]] = (),
        messages: Mapping[str, Any] | None = None,
        omitted: int = 0,
    ) -> None:
        super().__init__(message, messages)
        self.items = list(items)
        self.omitted = omitted


class DuplicateItems(InvalidBatch):
    """A batch sent with an Idempotency-Key holds identical events (same userId, eventType
    and payload). Under one key they would share one eventId and be stored once, though
    the client was told each was accepted, so the batch is refused (422). `items` lists
    `{"index", "duplicateOf"}` per repeat, `duplicateOf` being the first identical item."""


def error_response(
    status: int, type_: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
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
    # Keep headers such as 405's Allow, drop werkzeug's HTML content type.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return error_response(
        exc.code or 500, _http_type(exc), exc.description or exc.name, headers=headers
    )


def handle_invalid_batch(exc: InvalidBatch) -> Response:
    extra: dict[str, Any] = {"items": exc.items}
    if exc.omitted:
        extra["omittedItems"] = exc.omitted
    if exc.messages:
        extra["fields"] = dict(exc.messages)
    return error_response(400, "validation_error", str(exc), **extra)


def handle_duplicate_items(exc: DuplicateItems) -> Response:
    extra: dict[str, Any] = {"items": exc.items}
    if exc.omitted:
        extra["omittedItems"] = exc.omitted
    return error_response(422, "duplicate_items", str(exc), **extra)


def handle_invalid(exc: InvalidEvent) -> Response:
    return error_response(400, "validation_error", str(exc), fields=dict(exc.messages))


def handle_validation(exc: ValidationError) -> Response:
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return error_response(400, "validation_error", "Invalid input.", fields=messages)


def handle_unavailable(exc: Unavailable) -> Response:
    logger.warning("kafka unavailable", extra={"path": request.path, "reason": str(exc)})
    return error_response(503, "unavailable", str(exc), headers={"Retry-After": RETRY_AFTER})


def handle_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"path": request.path})
    return error_response(500, "internal_error", "Internal server error.")


def register_error_handlers(app: Flask) -> None:
    """Install the JSON handlers; Flask picks the most specific class for each error."""
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(DuplicateItems, handle_duplicate_items)
    app.register_error_handler(InvalidBatch, handle_invalid_batch)
    app.register_error_handler(InvalidEvent, handle_invalid)
    app.register_error_handler(ValidationError, handle_validation)
    app.register_error_handler(Unavailable, handle_unavailable)
    app.register_error_handler(Exception, handle_unexpected)

"""Every error the API answers is JSON: `{"error": {"type", "message", ...}}`.

Client mistakes map to 4xx with the reason, Kafka trouble to 503 (retry), and anything
unexpected to a 500 whose details go to the log, never to the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Flask, Response, request
from marshmallow import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from shared import web
from shared.errors import InvalidEvent, Unavailable
from shared.web import error_response as error_response  # re-exported

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
    return unavailable_response(request.path, str(exc))


def unavailable_response(path: str, reason: str) -> Response:
    """The 503 for a request to `path` that Kafka could not serve, logged."""
    logger.warning("kafka unavailable", extra={"path": path, "reason": reason})
    return error_response(503, "unavailable", reason, headers={"Retry-After": RETRY_AFTER})


# A client whose body is over the limit is usually still sending when its 413 is ready.
# Closing then, with its bytes unread, makes the kernel reset the connection: the client
# sees a broken pipe instead of the answer (Python's urllib asks for a close after each
# request, so it always does). As nginx's lingering close does, the rest of the body is
# read and discarded first: up to this many bytes in all, for at most this long. Past
# either bound the connection may still be reset. The same bound is in docs/producer.md.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 5.0
_DRAIN_CHUNK = 64 * 1024


def handle_too_large(exc: RequestEntityTooLarge) -> Response:
    """The 413, once the rest of the request's body has been drained (within bounds)."""
    drain_body(request.environ)
    return web.handle_http(exc)


def drain_body(environ: Mapping[str, Any]) -> bool:
    """Read and discard the rest of the request body, unless the request declares more
    than `DRAIN_MAX_BYTES`; stop at that many bytes or after `DRAIN_SECONDS`. True when
    the body was read to its end."""
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared.isascii() and declared.isdigit() and int(declared) > DRAIN_MAX_BYTES:
        return False
    stream = environ["wsgi.input"]
    sock = environ.get("gunicorn.socket")
    deadline = time.monotonic() + DRAIN_SECONDS
    previous = None if sock is None else sock.gettimeout()
    read = 0
    try:
        if sock is not None:
            # Each read waits at most what is left of the bound: a client that stops
            # sending cannot hold the connection open by it.
            sock.settimeout(DRAIN_SECONDS)
        while read <= DRAIN_MAX_BYTES and time.monotonic() < deadline:
            chunk = stream.read(_DRAIN_CHUNK)
            if not chunk:
                return True
            read += len(chunk)
    except Exception:
        # The client went away, or sent a malformed chunk (gunicorn's parser errors are
        # not OSErrors): either way there is nothing more to drain.
        pass
    finally:
        if sock is not None:
            sock.settimeout(previous)
    return False


def register_error_handlers(app: Flask) -> None:
    """Install the shared JSON handlers and the producer's own; Flask picks the most
    specific class for each error."""
    web.register_error_handlers(app)
    app.register_error_handler(DuplicateItems, handle_duplicate_items)
    app.register_error_handler(InvalidBatch, handle_invalid_batch)
    app.register_error_handler(InvalidEvent, handle_invalid)
    app.register_error_handler(ValidationError, handle_validation)
    app.register_error_handler(Unavailable, handle_unavailable)
    app.register_error_handler(RequestEntityTooLarge, handle_too_large)

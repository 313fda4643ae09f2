"""Every error the API answers is JSON: `{"error": {"type", "message", ...}}`.

Client mistakes map to 4xx with the reason, Kafka trouble to 503 (retry), and anything
unexpected to a 500 whose details go to the log, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Flask, Response, request
from marshmallow import ValidationError

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


def register_error_handlers(app: Flask) -> None:
    """Install the shared JSON handlers and the producer's own; Flask picks the most
    specific class for each error."""
    web.register_error_handlers(app)
    app.register_error_handler(DuplicateItems, handle_duplicate_items)
    app.register_error_handler(InvalidBatch, handle_invalid_batch)
    app.register_error_handler(InvalidEvent, handle_invalid)
    app.register_error_handler(ValidationError, handle_validation)
    app.register_error_handler(Unavailable, handle_unavailable)

"""The tracking API: `/v1/batch`, `/v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`,
the HTTP API that Segment's and RudderStack's SDKs post to. Each message becomes an event
of schema version 2 (producer_service.tracking_messages says how), published like
`/events/batch` publishes (answered only after Kafka's acks, acks=all).

What a caller is told, in the words the SDKs read (`code` and `message` in every error):

* 200 `{"success": true, ...}`: every accepted message is acknowledged by Kafka. Invalid
  messages of a batch do not stop the valid ones: they are listed under `invalid` (and
  counted in `producer_tracking_messages_total`), because an SDK drops a batch answered
  400 and would lose the valid ones with it. Messages whose kind maps to a type that
  EVENT_TYPES does not admit are counted under `ignored`.
* A batch's own `context` applies to each of its messages, under each message's own
  top-level context keys (`tracking_messages.merged_context`); a message whose merged
  context is over its bound is one of the invalid ones.
* 400: the body is not a batch, or its `context` is not an object (or a single call's
  message is invalid); 413: over TRACKING_MAX_BATCH_BYTES (inflated), a batch whose
  `context` times its number of messages is over it too, or a single message over
  TRACKING_MAX_MESSAGE_BYTES;
  429 with Retry-After from the quota; 503 when Kafka did not acknowledge every accepted
  message: the SDK retries, and each message's eventId (from its messageId and the
  caller, `shared.events.message_event_id`) makes the retry store nothing twice.

Credentials: Basic auth whose user name is a key of PRODUCER_API_KEYS (the SDKs' write
key; the password is ignored), or whatever `/events` accepts; scope `events:write`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from producer_service.events import (
    MAX_ITEM_ERRORS,
    encodable_scan,
    parsed_object,
    publish_records,
)
from producer_service.metrics import TRACKING_MESSAGES
from producer_service.state import ProducerState, state, state_of
from producer_service.tracking_messages import (
    IGNORED,
    InvalidMessage,
    TrackingRules,
    batch_context,
    batch_messages,
    check_sizes,
    fast_event,
    message_event,
)
from shared import web
from shared.auth import WRITE, Unauthenticated
from shared.errors import InvalidEvent, Unavailable
from shared.events import message_event_id, record_v2, utc_timestamp
from shared.json_codec import compact_json, compact_json_scanned

logger = logging.getLogger(__name__)

bp = Blueprint("tracking", __name__, url_prefix="/v1")

# Where the app keeps its TrackingRules.
RULES = "producer.tracking.rules"
# Where `require_write_key` leaves who the caller is, for the eventIds.
CALLER = "producer.tracking.caller"


@bp.before_request
def require_write_key() -> None:
    """Let the request in as `/events` would, taking Basic auth's user name as an API key;
    note the caller (the credential's subject, or on an open producer the write key
    given, or "") for the eventIds."""
    authorization = request.headers.get("Authorization", "")
    write_key = basic_user(authorization)
    try:
        principal = web.authorize(WRITE, write_key)
    except Unauthenticated as exc:
        if write_key is None:
            raise
        raise Unauthenticated("The write key (Basic auth user name) is not a valid key.") from exc
    request.environ[CALLER] = principal.subject if principal is not None else write_key or ""


def basic_user(authorization: str) -> str | None:
    """The user name of a `Basic` Authorization value, None for any other scheme; 401
    when it is not base64 of `user:password` in UTF-8."""
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated(
            "The Basic credential is not base64 of UTF-8 user:password."
        ) from None
    user, _, _ = decoded.partition(":")
    return user


@bp.after_request
def sdk_error_fields(response: Response) -> Response:
    """Give an error answer the top-level `code` and `message` the SDKs read, beside our
    `error` object (an SDK reading an error without them fails on a KeyError)."""
    if response.status_code < 400 or response.mimetype != "application/json":
        return response
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return response
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        response.set_data(
            compact_json({"code": error.get("type"), "message": error.get("message"), **body})
        )
    return response


@bp.record_once
def _build_rules(setup: BlueprintSetupState) -> None:
    # Once per app: a schema costs far more to build than a request to validate.
    app = cast("Flask", setup.app)
    settings = state_of(app).settings
    app.extensions[RULES] = TrackingRules.of(
        settings.event_types, settings.tracking_kind_types, settings.max_payload_bytes
    )


@bp.post("/batch")
def batch() -> Response:
    """Publish a batch's valid messages; 200 once Kafka acknowledged them all."""
    st = state()
    max_bytes = st.settings.tracking_max_batch_bytes
    body, strict = parsed_object(max_bytes, gunzip=True)
    messages = batch_messages(body)
    if messages is None:
        raise BadRequest('Not a batch: the body must be an object with a "batch" list.')
    if st.quota is not None:
        st.quota.charge(len(messages))
    # After the quota: a refused request costs no validation.
    found = encodable_scan(body, strict)
    context = batch_context(body)
    if context is not None:
        _bound_fan_out(context, len(messages), max_bytes)
    return _publish_messages(st, messages, None, found, context)


def _bound_fan_out(context: Mapping[str, Any], messages: int, max_bytes: int) -> None:
    """413 when the batch's context, written into each of its messages, would add more
    than `max_bytes`: a small body must not make a flood of large records."""
    added = len(compact_json(context)) * messages
    if added > max_bytes:
        raise RequestEntityTooLarge(
            f"The batch's context, applied to each of its {messages} messages, adds "
            f"{added} bytes; the limit is {max_bytes}."
        )


@bp.post("/track")
def track() -> Response:
    return _single("track")


@bp.post("/page")
def page() -> Response:
    return _single("page")


@bp.post("/screen")
def screen() -> Response:
    return _single("screen")


@bp.post("/identify")
def identify() -> Response:
    return _single("identify")


def _single(kind: str) -> Response:
    """One message of `kind`: 200 once acknowledged (or ignored), 400 when invalid."""
    st = state()
    body, strict = parsed_object(st.settings.tracking_max_message_bytes, gunzip=True)
    if st.quota is not None:
        st.quota.charge(1)
    found = encodable_scan(body, strict)
    return _publish_messages(st, [body], kind, found, None)


def _publish_messages(
    st: ProducerState,
    messages: Sequence[Any],
    kind: str | None,
    found: int,
    context: Mapping[str, Any] | None,
) -> Response:
    """Publish the events of `messages` (a batch's, or a single call's of `kind`), the
    invalid ones reported (a batch) or refused (a single call). `found`: the scan bits of
    the body that holds them (`encodable_scan`); `context`: the batch's context."""
    rules: TrackingRules = current_app.extensions[RULES]
    caller: str = request.environ.get(CALLER, "")
    timestamp = utc_timestamp()
    max_bytes = st.settings.tracking_max_message_bytes
    # A record within both bounds has no part over either: only bigger ones are measured.
    unchecked = min(max_bytes, rules.max_payload_bytes)
    records: list[dict[str, Any]] = []
    values: list[bytes] = []
    invalid: list[dict[str, Any]] = []
    invalid_count = ignored = 0
    for index, message in enumerate(messages):
        try:
            event = fast_event(message, rules, kind, context)
            if event is None:
                event = message_event(message, rules, kind, context)
                if event is IGNORED:
                    ignored += 1
                    continue
            record = record_v2(message_event_id(caller, event.get("messageId")), event, timestamp)
            # Every container of the record is a part of the body: the body's scan
            # vouches for them.
            value = compact_json_scanned(record, found)
            if len(value) > unchecked:
                _check_size(event, value, rules, max_bytes, kind)
        except InvalidMessage as exc:
            if kind is not None:
                raise InvalidEvent("Invalid message.", exc.messages) from None
            invalid_count += 1
            if len(invalid) < MAX_ITEM_ERRORS:
                invalid.append(_invalid_item(index, message, exc.messages))
            continue
        records.append(record)
        values.append(value)
    _count(invalid_count, ignored)
    if records:
        _publish_all(records, values)
    answer: dict[str, Any] = {"success": True, "accepted": len(records), "ignored": ignored}
    if invalid_count:
        answer["invalid"] = invalid
        answer["invalidCount"] = invalid_count
        logger.info(
            "tracking messages refused",
            extra={"invalid": invalid_count, "accepted": len(records)},
        )
    return Response(compact_json(answer), mimetype="application/json")


def _publish_all(records: Sequence[Mapping[str, Any]], values: Sequence[bytes]) -> None:
    """Publish `records` and wait for Kafka's acks; `Unavailable` unless every one was
    acknowledged (the SDK then retries the whole batch, which messageIds make safe)."""
    deliveries = publish_records(records, values)
    failed = sum(1 for d in deliveries if not d.ok)
    if failed:
        first = next(d for d in deliveries if not d.ok)
        logger.warning(
            "tracking batch not fully acknowledged",
            extra={"events": len(records), "failed": failed, "reason": first.reason},
        )
        raise Unavailable(
            f"Kafka did not acknowledge {failed} of {len(records)} events: {first.error}. "
            "Retry the batch: messages with a messageId are stored once."
        )


def _check_size(
    event: Mapping[str, Any], value: bytes, rules: TrackingRules, max_bytes: int, kind: str | None
) -> None:
    """Raise InvalidMessage when the event's payload or context is over their bound, or
    its record `value` over `max_bytes` (RequestEntityTooLarge for a single call)."""
    size = len(value)
    check_sizes(event, size, rules)
    if size <= max_bytes:
        return
    if kind is not None:
        raise RequestEntityTooLarge(
            f"The message is {len(value)} bytes as an event; the limit is {max_bytes}."
        )
    raise InvalidMessage(
        "Invalid message.",
        {"_schema": [f"{len(value)} bytes as an event; the limit is {max_bytes}."]},
    )


def _invalid_item(index: int, message: Any, fields: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index, "fields": dict(fields)}
    message_id = message.get("messageId") if isinstance(message, dict) else None
    if isinstance(message_id, str) and len(message_id) <= 255:
        item["messageId"] = message_id
    return item


def _count(invalid: int, ignored: int) -> None:
    # Only when there is something to count: each inc is a locked file write.
    if invalid:
        TRACKING_MESSAGES.labels("invalid").inc(invalid)
    if ignored:
        TRACKING_MESSAGES.labels("ignored").inc(ignored)

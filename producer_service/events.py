"""The `/events` blueprint: validate, enrich, publish, and answer only after Kafka's ack."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

from producer_service.auth import require_api_key
from producer_service.delivery import Delivery
from producer_service.errors import DuplicateItems, InvalidBatch
from producer_service.metrics import observe_deliveries
from producer_service.schemas import BatchInputSchema
from producer_service.state import ProducerState, state
from shared.errors import InvalidEvent, Unavailable
from shared.events import EventInputSchema, enrich, enrich_batch, record_json
from shared.json_codec import compact_json, parse_json, scanned_json_problem

logger = logging.getLogger(__name__)

bp = Blueprint("events", __name__, url_prefix="/events")
bp.before_request(require_api_key)

IDEMPOTENCY_KEY_MAX = 255
# Per-item errors listed in a 400 for a batch; the rest are counted. A batch can hold up
# to `max_batch_events` bad items, and an answer bigger than the request helps nobody.
MAX_ITEM_ERRORS = 100


def parsed_object(max_bytes: int, *, gunzip: bool = False) -> tuple[dict[str, Any], bool]:
    """The request body parsed as a JSON object, or the matching 4xx, and whether its
    values are known to be writable (`parse_json`'s `strict`). The values may still be
    unwritable (`1e400` parses to inf, a `"\\ud800"` escape to a lone surrogate): use
    `json_object` unless a cheaper check must come first. `gunzip`: a body sent with
    `Content-Encoding: gzip` is inflated first; `max_bytes` bounds it before and after."""
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise UnsupportedMediaType("Content-Type must be application/json.")
    request.max_content_length = max_bytes
    raw = request.get_data(cache=False)  # raises 413 past max_bytes
    if gunzip:
        raw = _inflated(raw, max_bytes)
    try:
        body, strict = parse_json(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body, strict


def _inflated(raw: bytes, max_bytes: int) -> bytes:
    """`raw` as the request's Content-Encoding (gzip or none) says: inflated to at most
    `max_bytes` (413 beyond: a small gzip body may inflate a thousandfold)."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise UnsupportedMediaType("Content-Encoding must be gzip or absent.")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(f"The body is not valid gzip: {exc}") from None
    if len(body) > max_bytes:
        raise RequestEntityTooLarge(f"The inflated body is over {max_bytes} bytes.")
    if not inflater.eof or inflater.unused_data:
        raise BadRequest("The body must be exactly one complete gzip member.")
    return body


def require_encodable(body: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    """`body`, or a 400 when it holds anything we could not write back as strict JSON
    (non-finite numbers, unpaired surrogates in any key or string, nesting too deep).
    `strict` is `parsed_object`'s: such a body needs only the nesting check.

    One pass over the whole body settles it before any field is looked at, so neither
    the validators, the error messages (which echo unknown field names), the Kafka key
    nor the record value can meet such a value later."""
    encodable_scan(body, strict)
    return body


def encodable_scan(body: dict[str, Any], strict: bool = False) -> int:
    """`require_encodable`'s check, answering the `scan_json` bits of `body` it found:
    they vouch for any value built of `body`'s parts (`compact_json_scanned`)."""
    problem, found = scanned_json_problem(body, strict=strict)
    if problem is None:
        return found
    if problem.startswith("Out of range float"):
        # Python's own words for it would leave a client guessing which number.
        problem = "a number is not finite (NaN, Infinity, or out of range such as 1e400)"
    raise BadRequest(f"The body cannot be accepted as JSON: {problem}.")


def json_object(max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object that can be written back as strict JSON, or the
    matching 4xx."""
    return require_encodable(*parsed_object(max_bytes))


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise BadRequest(f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} characters.")
    return key


def publish_records(
    records: Sequence[Mapping[str, Any]], values: Sequence[bytes] | None = None
) -> list[Delivery]:
    """Publish `records` (their encoded `values` when given) and wait for Kafka's acks,
    within the ack timeout; each delivery counted in the metrics under its eventType
    (`metrics.label_event_types` bounds the labels)."""
    st = state()
    deliveries = st.publisher.publish(records, st.settings.ack_timeout, values)
    observe_deliveries(deliveries, (r["eventType"] for r in records))
    return deliveries


def _load_event(schema: EventInputSchema, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The loaded event and its payload's compact JSON, or InvalidEvent with marshmallow's
    messages. marshmallow runs only when the fast path refuses, to explain why."""
    fast = schema.load_fast(body)
    if fast is not None:
        return fast
    try:
        event = schema.load(body)
    except ValidationError as exc:
        raise InvalidEvent("Invalid event.", _as_dict(exc.messages)) from None
    return event, compact_json(event["payload"])


@bp.post("/generate")
def generate() -> Response:
    """Publish one event; 201 with the enriched event once Kafka acknowledged it."""
    st = state()
    if st.quota is not None:
        st.quota.charge(1)
    body = json_object(st.settings.max_event_body_bytes)
    key = idempotency_key()
    event, payload_json = _load_event(st.input_schema, body)
    record = enrich(event, idempotency_key=key)
    # Encoded once: the same bytes are the Kafka record value and the answer.
    value = record_json(record, payload_json)
    (delivery,) = publish_records([record], [value])
    if not delivery.ok:
        logger.warning(
            "event not acknowledged", extra={**logged_facts(record), "reason": delivery.reason}
        )
        raise Unavailable(f"Kafka did not acknowledge the event: {delivery.error}")
    if st.settings.log_events:
        logger.info(
            "event published",
            extra={
                **logged_facts(record),
                "partition": delivery.partition,
                "offset": delivery.offset,
            },
        )
    return Response(value, status=201, mimetype="application/json")


def logged_facts(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a log line about one event carries (never its payload)."""
    return {
        "event_id": record["eventId"],
        "user_id": record["userId"],
        "event_type": record["eventType"],
    }


@bp.post("/batch")
def batch() -> tuple[Response, int]:
    """Publish up to `max_batch_events` events, validated all-or-nothing."""
    st = state()
    body, strict = parsed_object(st.settings.max_batch_body_bytes)
    _count_and_charge(st, body.get("events"))
    require_encodable(body, strict)
    key = idempotency_key()
    records, values = _batch_records(st.batch_schema, body, key)
    deliveries = publish_records(records, values)
    return _batch_answer(records, deliveries)


def _count_and_charge(st: ProducerState, events: Any) -> None:
    """Refuse a batch over `max_batch_events`, then charge the quota one unit per event.

    Counted before anything looks at the items: validating each of a million tiny items
    only to say "too many" cost a worker a minute of CPU."""
    limit = st.settings.max_batch_events
    if isinstance(events, list) and len(events) > limit:
        raise InvalidBatch(
            f"A batch holds at most {limit} events; this one has {len(events)}. "
            "Nothing was published.",
            # The words marshmallow uses for the same check on a shorter list.
            messages={"events": [f"Length must be between 1 and {limit}."]},
        )
    if st.quota is not None:
        # Per event, counted from the parsed body the validation reuses; a body whose
        # `events` is no list is refused at validation and costs one.
        st.quota.charge(len(events) if isinstance(events, list) else 1)


def _batch_records(
    schema: BatchInputSchema, body: dict[str, Any], key: str | None
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The batch's records and their encoded values, or `InvalidBatch` (400) listing the
    bad items, or `DuplicateItems` (422) when a keyed batch names one event twice."""
    loaded = schema.load_fast(body)
    if loaded is None:
        try:
            items = schema.load(body)["events"]
        except ValidationError as exc:
            raise _invalid_batch(_as_dict(exc.messages)) from None
        loaded = [(item, compact_json(item["payload"])) for item in items]
    records = enrich_batch([event for event, _ in loaded], idempotency_key=key)
    values = [
        record_json(record, payload_json)
        for record, (_, payload_json) in zip(records, loaded, strict=True)
    ]
    if key is not None:
        # Random ids never repeat; only a keyed batch can name one event twice.
        _refuse_repeats(records)
    return records, values


def _batch_answer(
    records: Sequence[Mapping[str, Any]], deliveries: Sequence[Delivery]
) -> tuple[Response, int]:
    """201 when every event was acknowledged, 207 with each item's status when some were,
    `Unavailable` (503) when none was."""
    event_ids = [r["eventId"] for r in records]
    acknowledged = sum(1 for d in deliveries if d.ok)
    _log_each(records, deliveries)
    summary = {
        "events": len(records),
        "acknowledged": acknowledged,
        "first_event_id": event_ids[0],
        "last_event_id": event_ids[-1],
    }
    if acknowledged == len(records):
        logger.info("batch published", extra=summary)
        # What jsonify writes for these ASCII ids, without its per-call set-up.
        accepted = compact_json({"eventIds": event_ids}) + b"\n"
        return Response(accepted, mimetype="application/json"), 201
    logger.warning("batch not fully acknowledged", extra=summary)
    if acknowledged == 0:
        raise Unavailable(
            f"Kafka acknowledged none of the {len(records)} events: {deliveries[0].error}"
        )
    items = [
        {"index": i, "eventId": d.event_id, "status": 201}
        if d.ok
        else {"index": i, "eventId": d.event_id, "status": 503, "error": d.error}
        for i, d in enumerate(deliveries)
    ]
    return jsonify(eventIds=event_ids, items=items), 207


def _log_each(records: Sequence[Mapping[str, Any]], deliveries: Sequence[Delivery]) -> None:
    # Per-event lines only at DEBUG: at INFO they would cost more than the publish. The
    # check comes first so that a batch does not build a thousand unused `extra` dicts.
    if not logger.isEnabledFor(logging.DEBUG):
        return
    for record, delivery in zip(records, deliveries, strict=True):
        logger.debug(
            "event published" if delivery.ok else "event not acknowledged",
            extra={
                "event_id": record["eventId"],
                "user_id": record["userId"],
                "event_type": record["eventType"],
                "partition": delivery.partition,
                "offset": delivery.offset,
            },
        )


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


def _invalid_batch(messages: dict[str, Any]) -> InvalidBatch:
    problems = messages.get("events")
    if not isinstance(problems, dict):
        return InvalidBatch("Invalid batch; nothing was published.", messages=messages)
    # marshmallow keys item errors by index: list them in order, with the index.
    indexes = sorted(problems)
    items = [{"index": i, "fields": problems[i]} for i in indexes[:MAX_ITEM_ERRORS]]
    envelope = {k: v for k, v in messages.items() if k != "events"}
    message = f"{len(indexes)} invalid event(s); nothing was published."
    if len(indexes) > len(items):
        message += f" The first {len(items)} are listed; {len(indexes) - len(items)} more."
    return InvalidBatch(message, items=items, messages=envelope, omitted=len(indexes) - len(items))


def _refuse_repeats(records: Sequence[Mapping[str, Any]]) -> None:
    """Raise DuplicateItems when two records share an eventId, i.e. (under one key) two
    items are the same event: the consumer would keep one, after both were answered 201,
    and no retry could tell them apart."""
    first: dict[str, int] = {}
    repeats: list[dict[str, int]] = []
    for i, record in enumerate(records):
        seen = first.setdefault(record["eventId"], i)
        if seen != i:
            repeats.append({"index": i, "duplicateOf": seen})
    if not repeats:
        return
    listed = repeats[:MAX_ITEM_ERRORS]
    message = (
        f"{len(repeats)} event(s) repeat an earlier one (same userId, eventType and payload) "
        "under one Idempotency-Key, so they would share an eventId and be stored once; "
        "nothing was published. Make each item distinct (e.g. by a payload field) or send "
        "the repeats under another key."
    )
    if len(repeats) > len(listed):
        message += f" The first {len(listed)} are listed; {len(repeats) - len(listed)} more."
    raise DuplicateItems(message, items=listed, omitted=len(repeats) - len(listed))

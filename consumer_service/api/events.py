"""The read blueprint: `/events/processed` (paged, filtered), one event by id, `/stats`;
each needs `events:read` when the API has credentials configured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError

from consumer_service.api.payloads import PayloadOpener
from consumer_service.api.schemas import ProcessedQuerySchema
from consumer_service.config import ConsumerSettings
from consumer_service.storage import EventStore, PageQuery
from shared.auth import READ
from shared.web import error_response, scope_guard

bp = Blueprint("events", __name__)
bp.before_request(scope_guard(READ))

EXTENSION = "consumer_service"


@dataclass(frozen=True)
class ReadState:
    """What the views need, built once per app by `create_app`."""

    settings: ConsumerSettings
    store: EventStore
    # Set with payload encryption on: opens the stored payloads for the answer.
    payloads: PayloadOpener | None = None


def state() -> ReadState:
    result: ReadState = current_app.extensions[EXTENSION]
    return result


def _format_errors(messages: Any) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{k}: {_format_errors(v)}" for k, v in messages.items())
    if isinstance(messages, list):
        return " ".join(str(m) for m in messages)
    return str(messages)


@bp.get("/events/processed")
def list_processed() -> Response:
    st = state()
    args = request.args.to_dict()
    # A store whose cursor is opaque (the cluster store's vector of per-partition
    # positions, docs/scaling.md), not the single node's number, checks its own.
    token = args.pop("cursor", None) if st.store.opaque_cursor else None
    try:
        q = ProcessedQuerySchema().load(args)
        cursor: int | str = int(q.get("cursor", 0))
        if token is not None:
            cursor = st.store.parse_cursor(token)
    except ValidationError as exc:
        return error_response(400, "invalid_query", _format_errors(exc.messages))
    except ValueError as exc:
        return error_response(400, "invalid_query", f"cursor: {exc}")
    if q.get("empty"):
        # A window no stored timestamp can fall in (until <= since, or wholly outside years
        # 0000-9999) is a valid question with an empty answer, not a bad query: the
        # OpenAPI document cannot state a rule between two parameters.
        total = st.store.stats()["stored"]
        return jsonify({"events": [], "count": 0, "total": total, "next": None})
    query = PageQuery(
        limit=q["limit"],
        cursor=cursor,
        user_id=q.get("userId"),
        event_type=q.get("eventType"),
        since=q.get("since"),
        until=q.get("until"),
        schema_version=q.get("schemaVersion"),
    )
    page = st.store.page(query, st.settings.api.max_scan_per_page, st.settings.api.max_page_bytes)
    if st.payloads is not None:
        st.payloads.reveal(page.events)
    return jsonify(
        {
            "events": page.events,
            "count": len(page.events),
            "total": page.total,
            "next": None if page.next_cursor is None else str(page.next_cursor),
        }
    )


@bp.get("/events/processed/<event_id>")
def get_processed(event_id: str) -> Response:
    st = state()
    event = st.store.get(event_id)
    if event is None:
        return error_response(404, "not_found", f"No processed event {event_id}.")
    if st.payloads is not None:
        st.payloads.reveal([event])
    return jsonify(event)


@bp.get("/stats")
def stats() -> Response:
    return jsonify(state().store.stats())

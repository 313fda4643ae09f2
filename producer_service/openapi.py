"""The OpenAPI 3 document, generated from the marshmallow schemas with apispec.

Component shapes come from the schemas the code validates with (so the document cannot
drift from the behaviour); the paths below only say which schema each answer uses.
"""

from __future__ import annotations

import json
from typing import Any

from apispec import APISpec

from producer_service.config import ProducerSettings
from producer_service.quotas import quota_responses
from producer_service.schemas import (
    BatchAcceptedSchema,
    BatchInputSchema,
    BatchReportSchema,
    ErrorSchema,
    TrackingAnswerSchema,
    TrackingBatchSchema,
    TrackingErrorSchema,
)
from producer_service.tracking_messages import MessageSchema
from shared import web
from shared.auth import WRITE
from shared.events import EventInputSchema, EventRecordSchema, EventRecordV2Schema
from shared.web import json_response as _json
from shared.web import ref as _ref


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "Invalid JSON, an invalid event (with field messages) or a bad Idempotency-Key.",
        413: "The body is over the limit.",
        415: "The Content-Type is not application/json.",
        422: (
            "With an Idempotency-Key, two items of the batch are the same event (same "
            "userId, eventType and payload): they would share one eventId and be stored "
            "once. `type` is `duplicate_items`; `items` lists `{index, duplicateOf}` per "
            "repeat (the first 100, `omittedItems` counts the rest). Nothing was published."
        ),
        503: "Kafka did not acknowledge in time; retry, with the same Idempotency-Key.",
    }
    return {str(s): _json("Error", meaning[s]) for s in statuses}


# The Idempotency-Key header, as both /events routes take it.
IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": (
        "Makes retries safe. With a key, an event's eventId is a UUIDv5 of the key and "
        "the event's userId, eventType and payload (object keys in any order), never "
        "of its position in a batch: re-sending the same event under the same key, "
        "alone or in any batch, in any order, gives the same eventId, and it is "
        "stored once. A different event under a reused key gets its own eventId and "
        "is stored too. The same key may cover one event or a whole batch."
    ),
}


def build_spec(settings: ProducerSettings) -> dict[str, Any]:
    """The OpenAPI document for an app built with `settings` (allowed types, limits)."""
    spec = web.new_spec(
        "User-activity producer",
        "Validated, durable intake of user-activity events into Kafka. A 201 is sent only "
        "after Kafka acknowledged the record (acks=all).",
        error_schema=ErrorSchema,
    )
    guarded = web.security(spec, api_keys=bool(settings.api_keys), jwt=settings.auth.jwt_enabled)
    _add_components(spec, settings)
    spec.path(path="/events/generate", operations={"post": _generate(settings, guarded)})
    spec.path(path="/events/batch", operations={"post": _batch(settings, guarded)})
    _add_tracking(spec, settings, guarded)
    web.document_ops(
        spec,
        ready={
            "summary": "Kafka answers a metadata request for the topic within 1 s",
            "responses": {
                "200": _json("Health", "Ready."),
                "503": _json("Error", "Kafka is not reachable."),
            },
        },
    )
    return spec.to_dict()


def _add_components(spec: APISpec, settings: ProducerSettings) -> None:
    input_schema = EventInputSchema(settings.event_types, settings.max_payload_bytes)
    spec.components.schema("EventInput", schema=input_schema)
    spec.components.schema("EventRecord", schema=EventRecordSchema)
    spec.components.schema("EventRecordV2", schema=EventRecordV2Schema)
    spec.components.schema(
        "BatchInput",
        schema=BatchInputSchema(
            settings.event_types, settings.max_payload_bytes, settings.max_batch_events
        ),
    )
    spec.components.schema("BatchAccepted", schema=BatchAcceptedSchema)
    spec.components.schema("BatchReport", schema=BatchReportSchema)


def _generate(settings: ProducerSettings, guarded: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The operation object of POST /events/generate."""
    return {
        "summary": "Publish one event",
        "parameters": [IDEMPOTENCY_KEY_PARAMETER],
        "security": guarded,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("EventInput")}},
        },
        "responses": {
            "201": _json("EventRecord", "Kafka acknowledged the enriched event."),
            **_errors(400, 413, 415, 503),
            **web.auth_responses(WRITE, bool(guarded)),
            **quota_responses(settings),
        },
    }


def _batch(settings: ProducerSettings, guarded: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The operation object of POST /events/batch."""
    return {
        "summary": f"Publish up to {settings.max_batch_events} events",
        "description": (
            "Validation is all-or-nothing: one invalid item gives a 400 listing "
            "every bad index and field, and nothing is published. With an "
            "Idempotency-Key, identical items are a 422. 503 when Kafka "
            "acknowledged none of the events."
        ),
        "parameters": [IDEMPOTENCY_KEY_PARAMETER],
        "security": guarded,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("BatchInput")}},
        },
        "responses": {
            "201": _json("BatchAccepted", "Every event was acknowledged."),
            "207": _json("BatchReport", "Some events were acknowledged, some not."),
            **_errors(400, 413, 415, 422, 503),
            **web.auth_responses(WRITE, bool(guarded)),
            **quota_responses(settings),
        },
    }


# The single-call routes of the tracking API, each implying its message's kind.
SINGLE_CALLS = ("track", "page", "screen", "identify")
# What a message of each kind must hold besides userId or anonymousId.
_KIND_NEEDS = {"track": ["event"], "group": ["groupId"], "alias": ["previousId"]}


def _add_tracking(
    spec: APISpec, settings: ProducerSettings, guarded: list[dict[str, list[str]]]
) -> None:
    """The tracking API (/v1/*): a Basic auth scheme for the write key, the shapes, and
    one operation per route (producer_service.tracking says what each answers)."""
    security = _write_key_security(spec, settings, guarded)
    _add_tracking_schemas(spec, settings)
    errors = {
        "400": _json("TrackingError", "Not a batch, or (a single call) an invalid message."),
        "413": _json("TrackingError", "Over the size limits."),
        "415": _json("TrackingError", "Not application/json, or an encoding but gzip."),
        "503": _json("TrackingError", "Kafka did not acknowledge every message; retry."),
        **_tracking_errors(web.auth_responses(WRITE, bool(security))),
        **_tracking_errors(quota_responses(settings)),
    }
    answer = _json("TrackingAnswer", "Every accepted message was acknowledged by Kafka.")
    spec.path(
        path="/v1/batch",
        operations={
            "post": {
                "summary": "Publish a batch of tracking API messages",
                "description": (
                    "Each message becomes an event of schema version 2. Invalid messages "
                    "are listed in the 200 and the valid ones published."
                ),
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TrackingBatch")}},
                },
                "responses": {"200": answer, **errors},
            }
        },
    )
    for kind in SINGLE_CALLS:
        spec.path(
            path=f"/v1/{kind}",
            operations={
                "post": {
                    "summary": f"Publish one {kind} message",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref(f"Tracking{kind.title()}")}
                        },
                    },
                    "responses": {"200": answer, **errors},
                }
            },
        )


def _write_key_security(
    spec: APISpec, settings: ProducerSettings, guarded: list[dict[str, list[str]]]
) -> list[dict[str, list[str]]]:
    """The tracking API's security: the /events schemes plus, with API keys, Basic auth
    carrying the key as its user name (an SDK's write key)."""
    if not settings.api_keys:
        return guarded
    spec.components.security_scheme(
        "WriteKey",
        {
            "type": "http",
            "scheme": "basic",
            "description": "An API key as the user name (an SDK's write key).",
        },
    )
    return [*guarded, {"WriteKey": []}]


def _add_tracking_schemas(spec: APISpec, settings: ProducerSettings) -> None:
    """The tracking API's component schemas: the batch, its answer and errors, and one
    message schema per single-call route (the route implies the message's kind)."""
    spec.components.schema("TrackingMessage", schema=MessageSchema(settings.event_types))
    spec.components.schema("TrackingBatch", schema=TrackingBatchSchema)
    spec.components.schema("TrackingAnswer", schema=TrackingAnswerSchema)
    spec.components.schema("TrackingError", schema=TrackingErrorSchema)
    schemas = spec.components.schemas
    message = schemas["TrackingMessage"]
    # A null field counts as absent, so a required one must not be null.
    message["anyOf"] = [
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in ("userId", "anonymousId")
    ]
    for kind in SINGLE_CALLS:
        # The route implies the kind; a `type` sent must agree.
        one = {**message, "properties": {**message["properties"]}}
        one["properties"]["type"] = {"type": "string", "enum": [kind, None], "nullable": True}
        needs = _KIND_NEEDS.get(kind, [])
        one.pop("required", None)
        if needs:
            one["required"] = needs
            for name in needs:
                one["properties"][name] = {
                    k: v for k, v in one["properties"][name].items() if k != "nullable"
                }
        schemas[f"Tracking{kind.title()}"] = one


def _tracking_errors(responses: dict[str, Any]) -> dict[str, Any]:
    """`responses` with each `Error` body a `TrackingError` (the tracking API's errors add
    `code` and `message`)."""
    text = json.dumps(responses).replace(
        '"#/components/schemas/Error"', '"#/components/schemas/TrackingError"'
    )
    loaded: dict[str, Any] = json.loads(text)
    return loaded

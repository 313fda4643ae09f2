"""The read API's OpenAPI 3 document, generated from the marshmallow schemas with apispec.

Component shapes come from the schemas the code validates and answers with; the paths
below only say which schema each answer uses: the reads, the operations endpoints, then
the dashboard.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from marshmallow import fields

from consumer_service.api.dashboard.views import ASSETS
from consumer_service.api.schemas import (
    DashboardDataSchema,
    ErasedSchema,
    EventPageSchema,
    HealthSchema,
    ProcessedQuerySchema,
    StatsSchema,
)
from consumer_service.config import ConsumerSettings
from consumer_service.storage.cluster_page import CURSOR_PREFIX
from shared import web
from shared.auth import ERASE, READ
from shared.event_rules import USER_ID_MAX, FullRegexp
from shared.events import STORED_SCHEMAS
from shared.web import json_response, text_response

# The cluster store's cursor: its prefix, then base64url (storage.cluster_page.decode_cursor
# checks the rest; an empty body is the start).
CLUSTER_CURSOR_PATTERN = "^" + re.escape(CURSOR_PREFIX) + "[A-Za-z0-9_-]{0,8000}$"


class ClusterProcessedQuerySchema(ProcessedQuerySchema):
    """The query of GET /events/processed as a cluster-backed API documents it: only the
    cursor's pattern differs. Documentation only: the API validates the cluster cursor
    with the cluster store itself."""

    cursor = fields.String(
        validate=FullRegexp(CLUSTER_CURSOR_PATTERN, error="Not a valid cursor."),
        metadata=ProcessedQuerySchema().fields["cursor"].metadata,
    )


# What an operation that needs `events:read` adds to its operation object.
Guard = dict[str, Any]


def build_spec(settings: ConsumerSettings | None = None, *, cluster: bool = False) -> APISpec:
    """The document /openapi.json serves for an API built with `settings` (None: one with
    no credentials configured). `cluster`: the API reads a Redis Cluster, whose `cursor`
    is the `v1.` form; otherwise the single-node digits. Both forms are described either
    way."""
    spec = web.new_spec(
        "User-activity consumer: read API",
        "Events processed from Kafka and stored in Redis, in processing order.",
        health_schema=HealthSchema,
    )
    api_keys = bool(settings and settings.api_keys)
    jwt = bool(settings and settings.auth.jwt_enabled)
    security = web.security(spec, api_keys=api_keys, jwt=jwt)
    guard: Guard = {
        "security": security,
        "responses": web.auth_responses(READ, bool(security)),
    }
    _document_stored_event(spec)
    spec.components.schema("EventPage", schema=EventPageSchema)
    # Each event of a page is in the version it was produced in.
    page = spec.components.schemas["EventPage"]
    page["properties"]["events"]["items"] = {"$ref": "#/components/schemas/StoredEvent"}
    spec.components.schema("Stats", schema=StatsSchema)
    _document_processed(
        spec, ClusterProcessedQuerySchema if cluster else ProcessedQuerySchema, guard
    )
    _document_event_and_stats(spec, guard)
    _document_erasure(
        spec,
        {"security": security, "responses": web.auth_responses(ERASE, bool(security))},
    )
    web.document_ops(
        spec,
        ready={
            "summary": "Readiness: Redis, Kafka and the worker",
            "responses": {
                "200": json_response("Health", "Ready"),
                "503": json_response("Health", "Not ready"),
            },
        },
    )
    _document_dashboard(spec, guard)
    return spec


def _guarded(guard: Guard, operation: dict[str, Any]) -> dict[str, Any]:
    """`operation` needing `events:read`: its security and its 401 and 403 answers."""
    return {
        **operation,
        "security": guard["security"],
        "responses": {**operation["responses"], **guard["responses"]},
    }


def _document_processed(spec: APISpec, query: type[ProcessedQuerySchema], guard: Guard) -> None:
    spec.path(
        path="/events/processed",
        operations={
            "get": _guarded(
                guard,
                {
                    "summary": "Processed events, oldest first, paged by cursor",
                    "description": (
                        "Every parameter is optional. An empty value (`?until=`) is invalid "
                        "for every parameter and answered 400, as is an unknown parameter. "
                        "`since` and `until` select `since <= timestamp < until`; a window "
                        "that can hold no event (`until` not after `since`) is an empty page.\n\n"
                        "Every page is bounded, whatever the store holds: it examines at most "
                        "`CONSUMER_MAX_SCAN_PER_PAGE` index entries (default 5,000) and ends "
                        "after the event that brings its events to `CONSUMER_MAX_PAGE_BYTES` "
                        "(default 1 MiB). A page can therefore hold fewer than `limit` events, "
                        "even none, with `next` set: keep paging until `next` is null."
                    ),
                    "parameters": [{"in": "query", "schema": query}],
                    "responses": {
                        "200": json_response("EventPage", "A page"),
                        "400": json_response("Error", "Invalid query"),
                        "503": json_response("Error", "Redis unavailable"),
                    },
                },
            )
        },
    )


def _document_stored_event(spec: APISpec) -> None:
    """`StoredEvent`: an event of any schema version, as the read API returns it. anyOf,
    not oneOf: a version 2 event with only version 1's fields also fits version 1's."""
    versions = []
    for version, schema in sorted(STORED_SCHEMAS.items()):
        spec.components.schema(f"StoredEventV{version}", schema=schema)
        versions.append({"$ref": f"#/components/schemas/StoredEventV{version}"})
    spec.components.schema("StoredEvent", component={"anyOf": versions})


def _document_event_and_stats(spec: APISpec, guard: Guard) -> None:
    spec.path(
        path="/events/processed/{eventId}",
        operations={
            "get": _guarded(
                guard,
                {
                    "summary": "One processed event",
                    "parameters": [
                        {
                            "in": "path",
                            "name": "eventId",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": json_response("StoredEvent", "The event"),
                        "404": json_response("Error", "Not processed (or past retention)"),
                        "503": json_response("Error", "Redis unavailable"),
                    },
                },
            )
        },
    )
    spec.path(
        path="/stats",
        operations={
            "get": _guarded(
                guard,
                {
                    "summary": "Totals",
                    "responses": {
                        "200": json_response("Stats", "Totals"),
                        "503": json_response("Error", "Redis unavailable"),
                    },
                },
            )
        },
    )


def _document_erasure(spec: APISpec, guard: Guard) -> None:
    spec.components.schema("Erased", schema=ErasedSchema)
    spec.path(
        path="/users/{userId}/events",
        operations={
            "delete": _guarded(
                guard,
                {
                    "summary": "Delete every stored event of one user",
                    "description": (
                        "Deletes the user's events and their index entries in Redis, "
                        "answers how many, and records the erasure: no event of the user "
                        "whose timestamp is at or before `erasedThrough` is stored again "
                        "(a redelivery, a group reset, a DLQ replay). Copies in Kafka and "
                        "the dead-letter topic stay until their retention."
                    ),
                    "parameters": [
                        {
                            "in": "path",
                            "name": "userId",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": USER_ID_MAX,
                            },
                        }
                    ],
                    "responses": {
                        "200": json_response("Erased", "Deleted"),
                        "400": json_response("Error", "A userId over the length limit"),
                        "503": json_response("Error", "Redis unavailable"),
                    },
                },
            )
        },
    )


def _document_dashboard(spec: APISpec, guard: Guard) -> None:
    spec.components.schema("DashboardData", schema=DashboardDataSchema)
    _document_text_get(
        spec,
        "/dashboard",
        "The live dashboard: an HTML page that polls /dashboard/data (the page holds no "
        "data, so it is open; it asks for a token when the data needs one)",
        text_response("The page", "text/html"),
    )
    for name, mimetype in ASSETS.items():
        _document_text_get(
            spec, f"/dashboard/{name}", f"The dashboard's {name}", text_response(name, mimetype)
        )
    spec.path(
        path="/dashboard/data",
        operations={
            "get": _guarded(
                guard,
                {
                    "summary": "What the dashboard shows, now",
                    "description": (
                        "200 once let in: a part whose source does not answer carries an "
                        "`error` (Redis: `stats` null and `recent` empty; Kafka: no "
                        "partitions). Asked without a credential (an API with none "
                        "configured), members' `host` is null and each `error` a fixed text "
                        "naming no address, user or broker message."
                    ),
                    "responses": {"200": json_response("DashboardData", "Figures")},
                },
            )
        },
    )


def _document_text_get(spec: APISpec, path: str, summary: str, response: dict[str, Any]) -> None:
    spec.path(path=path, operations={"get": {"summary": summary, "responses": {"200": response}}})

"""The read API's OpenAPI 3 document, generated from the marshmallow schemas with apispec.

Component shapes come from the schemas the code validates and answers with; the paths
below only say which schema each answer uses.
"""

from __future__ import annotations

import re

from apispec import APISpec
from marshmallow import fields

from consumer_service.api import dashboard
from consumer_service.api.schemas import (
    EventPageSchema,
    HealthSchema,
    ProcessedQuerySchema,
    StatsSchema,
)
from consumer_service.storage.cluster_page import CURSOR_PREFIX
from shared import web
from shared.events import FullRegexp, StoredEventSchema
from shared.web import json_response

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


def build_spec(*, cluster: bool = False) -> APISpec:
    """The document /openapi.json serves (the dashboard adds its own routes). `cluster`:
    the API reads a Redis Cluster, whose `cursor` is the `v1.` form; otherwise the
    single-node digits. Both forms are described either way."""
    spec = web.new_spec(
        "User-activity consumer: read API",
        "Events processed from Kafka and stored in Redis, in processing order.",
        health_schema=HealthSchema,
    )
    spec.components.schema("StoredEvent", schema=StoredEventSchema)
    spec.components.schema("EventPage", schema=EventPageSchema)
    spec.components.schema("Stats", schema=StatsSchema)

    err503 = json_response("Error", "Redis unavailable")
    spec.path(
        path="/events/processed",
        operations={
            "get": {
                "summary": "Processed events, oldest first, paged by cursor",
                "description": (
                    "Every parameter is optional. An empty value (`?until=`) is invalid "
                    "for every parameter and answered 400, as is an unknown parameter. "
                    "`since` and `until` select `since <= timestamp < until`; a window "
                    "that can hold no event (`until` not after `since`) is an empty page."
                ),
                "parameters": [
                    {
                        "in": "query",
                        "schema": ClusterProcessedQuerySchema if cluster else ProcessedQuerySchema,
                    }
                ],
                "responses": {
                    "200": json_response("EventPage", "A page"),
                    "400": json_response("Error", "Invalid query"),
                    "503": err503,
                },
            }
        },
    )
    spec.path(
        path="/events/processed/{eventId}",
        operations={
            "get": {
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
                    "503": err503,
                },
            }
        },
    )
    spec.path(
        path="/stats",
        operations={
            "get": {
                "summary": "Totals",
                "responses": {"200": json_response("Stats", "Totals"), "503": err503},
            }
        },
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
    dashboard.document(spec)
    return spec

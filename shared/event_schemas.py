"""JSON Schema documents of the event record, one per schema version, generated from the
marshmallow schemas of `shared.events` (the single source of the rules). Both services
serve them at `/schemas/events/v<N>.json` (shared.web's ops routes).

A document describes a record as a producer writes it today and the consumer stores it:
version 1's also covers the original design's shape, which lacks `schemaVersion` and may
lack `payload` (the consumer reads it as version 1 with `payload` `{}`). Rules marshmallow
states in code rather than in fields are added here by hand: version 2's "userId or
anonymousId".
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from shared.events import RECORD_SCHEMAS

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# What each version's document adds to what its marshmallow schema generates.
_EXTRA: dict[int, dict[str, Any]] = {
    1: {
        "description": (
            "An event record of schema version 1, as /events/generate and /events/batch "
            "write it. A record of the original design, without `schemaVersion` (and with "
            "`payload` absent or null), is also read as version 1."
        ),
    },
    2: {
        "description": (
            "An event record of schema version 2, as the tracking API (/v1/*) writes it: "
            "either `userId` or `anonymousId` is set (the Kafka key is the userId, else the "
            "anonymousId); `timestamp` is the producer's acceptance time, "
            "`originalTimestamp` the client's clock as sent."
        ),
        "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    },
}


def versions() -> list[int]:
    """The schema versions there are documents for, in order."""
    return sorted(RECORD_SCHEMAS)


@functools.cache
def _generated(version: int) -> dict[str, Any]:
    spec = APISpec(
        title="events", version="1", openapi_version="3.1.0", plugins=[MarshmallowPlugin()]
    )
    spec.components.schema("Event", schema=RECORD_SCHEMAS[version])
    schema: dict[str, Any] = spec.to_dict()["components"]["schemas"]["Event"]
    return {
        "$schema": DIALECT,
        "$id": f"/schemas/events/v{version}.json",
        "title": f"Event record, schema version {version}",
        **_EXTRA.get(version, {}),
        **schema,
    }


def event_json_schema(version: int) -> dict[str, Any] | None:
    """The JSON Schema document of `version` (a new dict), None for a version there is
    none of."""
    if version not in RECORD_SCHEMAS:
        return None
    return copy.deepcopy(_generated(version))

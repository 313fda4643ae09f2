"""Schemathesis against both services' OpenAPI documents, driving the real Flask apps in
process (WSGI) wired to the real Kafka and Redis, with this test's own topic and prefix.

The budget is fixed and the generation derandomized: `make test` runs the same cases
every time, so a failure here is a regression, not a lucky draw. Explore with a bigger
budget by hand (FUZZ_MAX_EXAMPLES=500, FUZZ_RANDOM=1) when changing an API.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings

from consumer_service.api import create_app as create_consumer_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted, decide
from consumer_service.storage import RedisEventStore
from producer_service import create_app as create_producer_app
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from shared.events import enrich
from shared.json_codec import compact_json

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))

# Applied to every fuzz test. The apps are built once per operation (function-scoped
# fixtures) and shared by its examples on purpose: one app per example would cost a Kafka
# client each. No example database: what runs is what the seed says, nothing replayed.
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# 503 is how both services say "Kafka or Redis did not answer, retry"; whether a given
# operation documents it is the status code check's business. Any other 5xx is a bug.
_NO_SERVER_ERRORS = {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}


def fuzz_config(
    operations: list[dict[str, Any]] | None = None, **extra: Any
) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 20_261_124,
            "generation": {"deterministic": True, "database": "none"},
            "checks": {"not_a_server_error": _NO_SERVER_ERRORS},
            "operations": operations or [],
            **extra,
        }
    )


class AppSlot:
    """A WSGI app that forwards to whichever app the running test plugged in.

    The schemas are built at import (schemathesis parametrizes at collection), the apps
    per test from fixtures. Giving the schema this slot as its app makes every request
    schemathesis sends, its own probes included (a check re-sends a request without the
    API key), go to the test's app in process. (schemathesis.pytest.from_fixture would
    load the schema from a fixture instead, but in schemathesis 4.32 it sets a node
    attribute that pytest 9.2 no longer has.)"""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.app is not None, "no app plugged into the slot"
        return self.app(environ, start_response)

    @contextmanager
    def plugged(self, app: Flask) -> Iterator[Flask]:
        self.app = app
        try:
            yield app
        finally:
            self.app = None


def fuzz_schema(
    document: dict[str, Any], slot: AppSlot, config: schemathesis.Config
) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_dict(document, config=config)
    schema.app = slot
    return schema


def served_document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.get_json()
    return document


def same_document(app: Flask, document: dict[str, Any]) -> None:
    """The fuzzed document is built at import (schemathesis parametrizes at collection);
    this proves it is the one the app under test serves."""
    assert served_document(app) == json.loads(json.dumps(document)), (
        "the app serves another document than the one fuzzed"
    )


# The key the API-key variant of the producer is configured with.
API_KEY = "fuzz-key"


@contextmanager
def running_producer(bootstrap: str, topic: str, **overrides: Any) -> Iterator[Flask]:
    settings = ProducerSettings(
        common=CommonSettings(kafka_bootstrap_servers=bootstrap, kafka_topic=topic),
        ack_timeout_ms=10_000,
        **overrides,
    )
    app = create_producer_app(settings)
    try:
        yield app
    finally:
        publisher_of(app).close(5)


# Stored before the read API is fuzzed, so its answers carry real events whose payloads
# the response schema must accept: unicode in keys and values, big and negative numbers,
# floats, nesting, an empty payload.
SEED_EVENTS: list[dict[str, Any]] = [
    {"userId": "ann", "eventType": "LOGIN", "payload": {}},
    {"userId": "bøb 🚀", "eventType": "LOGOUT", "payload": {"ключ": "значение", "n": -0.5}},
    {
        "userId": "cat",
        "eventType": "PRODUCT_VIEW",
        "payload": {"big": 2**70, "deep": {"a": [1, {"b": [None, True, 1e-300]}]}},
    },
    {"userId": "ann", "eventType": "PRODUCT_VIEW", "payload": {"": "", "\u2028": "\x00"}},
]


@pytest.fixture
def consumer_settings(
    kafka_bootstrap: str, redis_url: str, topic: str, redis_prefix: str
) -> ConsumerSettings:
    return ConsumerSettings(
        common=CommonSettings(
            kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic, redis_url=redis_url
        ),
        redis_prefix=redis_prefix,
        redis_timeout_seconds=2.0,
    )


@pytest.fixture
def event_store(consumer_settings: ConsumerSettings) -> Iterator[RedisEventStore]:
    """The real store under this test's key prefix."""
    s = consumer_settings
    store = RedisEventStore.from_url(
        s.common.redis_url,
        s.redis_prefix,
        s.dedup_ttl_seconds,
        retention_max_events=s.retention_max_events,
        retention_max_age_seconds=s.retention_max_age_seconds,
        timeout_seconds=s.redis_timeout_seconds,
    )
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def consumer_app(consumer_settings: ConsumerSettings, event_store: RedisEventStore) -> Flask:
    """The read API over `event_store`, holding SEED_EVENTS."""
    return seeded_app(consumer_settings, event_store)


def seeded_app(consumer_settings: ConsumerSettings, event_store: RedisEventStore) -> Flask:
    """The read API with `consumer_settings` over `event_store`, holding SEED_EVENTS."""
    accepted = []
    for offset, event in enumerate(SEED_EVENTS):
        value = compact_json(enrich(event))
        decision = decide(
            value, 0, offset, consumer_settings.max_message_bytes, consumer_settings.event_types
        )
        assert isinstance(decision, Accepted), decision
        accepted.append(decision)
    event_store.store_batch(accepted, "2026-11-24T04:29:53.123Z")
    return create_consumer_app(consumer_settings, event_store)

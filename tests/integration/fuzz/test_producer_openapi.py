"""The producer fuzzed from its own OpenAPI document, against the real Kafka: once as
deployed by default, once with API keys configured."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask

from producer_service.config import ProducerSettings
from producer_service.openapi import build_spec
from shared.auth import AuthSettings
from tests.tokens import SECRET, hs256

from .conftest import (
    API_KEY,
    FUZZ_SETTINGS,
    AppSlot,
    fuzz_config,
    fuzz_schema,
    running_producer,
    same_document,
)

# A schema-valid batch with two identical items under one Idempotency-Key is refused
# with a documented 422 (they would share an eventId): a rule JSON Schema cannot state.
# The tests check that a 422 only ever answers a keyed request. The broker is up, so a
# 503 (documented for when it is not) would fail the acceptance check here.
BATCH_RULES = [
    {
        "include-name": "POST /events/batch",
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "422"]}},
    }
]


def only_keyed_batches_get_422(case: schemathesis.Case, status: int) -> None:
    if status == 422:
        headers = {k.lower() for k in (case.headers or {})}
        assert "idempotency-key" in headers, "422 answered a batch without an Idempotency-Key"


# Only the topic and timeouts differ from the apps under test, and the document does not
# depend on them; `same_document` checks that.
DOCUMENT = build_spec(ProducerSettings())
KEYED_DOCUMENT = build_spec(ProducerSettings(api_keys=(API_KEY,)))
JWT_AUTH = AuthSettings(jwt_secret=SECRET)
JWT_DOCUMENT = build_spec(ProducerSettings(auth=JWT_AUTH))
# Made at collection, valid for a day: any run of the suite ends well inside that.
TOKEN = hs256("events:write", exp=int(time.time()) + 86_400)

SLOT = AppSlot()
schema = fuzz_schema(DOCUMENT, SLOT, fuzz_config(BATCH_RULES))
keyed_schema = fuzz_schema(
    KEYED_DOCUMENT,
    SLOT,
    fuzz_config(BATCH_RULES, auth={"openapi": {"ApiKey": {"api_key": API_KEY}}}),
)
jwt_schema = fuzz_schema(
    JWT_DOCUMENT, SLOT, fuzz_config(BATCH_RULES, auth={"openapi": {"Bearer": {"bearer": TOKEN}}})
)


@pytest.fixture
def producer(kafka_bootstrap: str, topic: str) -> Iterator[Flask]:
    with running_producer(kafka_bootstrap, topic) as app, SLOT.plugged(app):
        same_document(app, DOCUMENT)
        yield app


@pytest.fixture
def keyed_producer(kafka_bootstrap: str, topic: str) -> Iterator[Flask]:
    with running_producer(kafka_bootstrap, topic, api_keys=(API_KEY,)) as app, SLOT.plugged(app):
        same_document(app, KEYED_DOCUMENT)
        yield app


@pytest.fixture
def jwt_producer(kafka_bootstrap: str, topic: str) -> Iterator[Flask]:
    with running_producer(kafka_bootstrap, topic, auth=JWT_AUTH) as app, SLOT.plugged(app):
        same_document(app, JWT_DOCUMENT)
        yield app


@schema.parametrize()
@FUZZ_SETTINGS
def test_producer_answers_as_documented(case: schemathesis.Case, producer: Flask) -> None:
    """No 5xx but a documented 503; every status, content type and body as documented;
    schema-valid input accepted (201), invalid input refused with a 4xx."""
    only_keyed_batches_get_422(case, case.call_and_validate().status_code)


@keyed_schema.parametrize()
@FUZZ_SETTINGS
def test_producer_with_api_keys_answers_as_documented(
    case: schemathesis.Case, keyed_producer: Flask
) -> None:
    """As above with the key sent; schemathesis also re-sends requests without the key
    and with a wrong one, which must be refused with a documented 401."""
    only_keyed_batches_get_422(case, case.call_and_validate().status_code)


@jwt_schema.parametrize()
@FUZZ_SETTINGS
def test_producer_with_jwts_answers_as_documented(
    case: schemathesis.Case, jwt_producer: Flask
) -> None:
    """As above with a bearer JWT granting events:write; requests re-sent without it or
    with a wrong one must be refused with a documented 401."""
    only_keyed_batches_get_422(case, case.call_and_validate().status_code)

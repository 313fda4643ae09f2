"""The consumer's read API fuzzed from its own OpenAPI document, against the real Redis
holding a few stored events (and the real Kafka, which /ready asks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import schemathesis
from flask import Flask

from consumer_service.api import build_spec, create_app
from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from shared.auth import AuthSettings
from tests.tokens import SECRET, hs256

from .conftest import FUZZ_SETTINGS, AppSlot, fuzz_config, fuzz_schema, same_document, seeded_app

DOCUMENT = build_spec().to_dict()
# The read API with credentials: a key limited to the read API's two scopes, and JWTs.
API_KEY = "fuzz-key"
GUARDED = ConsumerSettings(
    api_keys=(f"{API_KEY} events:read events:erase",), auth=AuthSettings(jwt_secret=SECRET)
)
GUARDED_DOCUMENT = build_spec(GUARDED).to_dict()
# Made at collection, valid for a day: any run of the suite ends well inside that.
TOKEN = hs256("events:read events:erase", exp=int(time.time()) + 86_400)

SLOT = AppSlot()
schema = fuzz_schema(DOCUMENT, SLOT, fuzz_config())
jwt_schema = fuzz_schema(
    GUARDED_DOCUMENT, SLOT, fuzz_config(auth={"openapi": {"Bearer": {"bearer": TOKEN}}})
)
key_schema = fuzz_schema(
    GUARDED_DOCUMENT, SLOT, fuzz_config(auth={"openapi": {"ApiKey": {"api_key": API_KEY}}})
)


@pytest.fixture
def read_api(consumer_app: Flask) -> Iterator[Flask]:
    with SLOT.plugged(consumer_app):
        same_document(consumer_app, DOCUMENT)
        yield consumer_app


@schema.parametrize()
@FUZZ_SETTINGS
def test_read_api_answers_as_documented(case: schemathesis.Case, read_api: Flask) -> None:
    """No 5xx but a documented 503; every status, content type and body as documented;
    schema-valid requests answered 2xx (or a documented 404), invalid ones 4xx."""
    case.call_and_validate()


@pytest.fixture
def guarded_read_api(
    consumer_app: Flask, consumer_settings: ConsumerSettings, event_store: RedisEventStore
) -> Iterator[Flask]:
    """The read API over the same seeded store (`consumer_app` stored the events), with
    GUARDED's credentials."""
    settings = replace(consumer_settings, api_keys=GUARDED.api_keys, auth=GUARDED.auth)
    app = create_app(settings, event_store)
    with SLOT.plugged(app):
        same_document(app, GUARDED_DOCUMENT)
        yield app


@jwt_schema.parametrize()
@FUZZ_SETTINGS
def test_read_api_with_jwts_answers_as_documented(
    case: schemathesis.Case, guarded_read_api: Flask
) -> None:
    """As above with a bearer JWT granting events:read and events:erase; requests
    re-sent without it or with a wrong one must be refused with a documented 401."""
    case.call_and_validate()


@key_schema.parametrize()
@FUZZ_SETTINGS
def test_read_api_with_api_keys_answers_as_documented(
    case: schemathesis.Case, guarded_read_api: Flask
) -> None:
    """As above with an API key limited to events:read and events:erase."""
    case.call_and_validate()


# The same operation under budgets so small that nearly every page ends early: the
# cursor each page hands on must be one the API takes back.
TIGHT = AppSlot()
tight_schema = fuzz_schema(DOCUMENT, TIGHT, fuzz_config()).include(
    method="GET", path="/events/processed"
)


@pytest.fixture
def tight_read_api(
    consumer_settings: ConsumerSettings, event_store: RedisEventStore
) -> Iterator[Flask]:
    app = seeded_app(
        replace(
            consumer_settings,
            api=replace(consumer_settings.api, max_scan_per_page=1, max_page_bytes=1024),
        ),
        event_store,
    )
    with TIGHT.plugged(app):
        same_document(app, DOCUMENT)
        yield app


@tight_schema.parametrize()
@FUZZ_SETTINGS
def test_pages_under_tight_budgets_hand_on_cursors_the_api_takes(
    case: schemathesis.Case, tight_read_api: Flask
) -> None:
    case.call_and_validate()
    # The same query again, read here: the page it answers and the one after.
    client = tight_read_api.test_client()
    page = client.get("/events/processed", query_string=case.query or {})
    if page.status_code != 200 or page.get_json()["next"] is None:
        return
    query = {**(case.query or {}), "cursor": page.get_json()["next"]}
    follow = client.get("/events/processed", query_string=query)
    assert follow.status_code == 200, follow.get_json()

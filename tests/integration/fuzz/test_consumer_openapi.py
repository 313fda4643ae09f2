"""The consumer's read API fuzzed from its own OpenAPI document, against the real Redis
holding a few stored events (and the real Kafka, which /ready asks)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask

from consumer_service.api import build_spec

from .conftest import FUZZ_SETTINGS, AppSlot, fuzz_config, fuzz_schema, same_document

DOCUMENT = build_spec().to_dict()

SLOT = AppSlot()
schema = fuzz_schema(DOCUMENT, SLOT, fuzz_config())


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

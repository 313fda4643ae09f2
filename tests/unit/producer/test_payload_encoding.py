"""The intake path writes payloads with orjson, and with the stdlib's spelling wherever the
two differ: the Kafka record value is `compact_json(record)`, byte for byte, either way."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

import shared.json_codec
from tests.unit.producer.fakes import InMemoryEventPublisher


class NoStdlib:
    def encode(self, _value: Any) -> str:
        raise AssertionError("the stdlib encoder was called")


PAYLOADS = [
    {"productId": "sku-1", "price": 19.99, "currency": "EUR"},
    {"geo": {"lat": 48.8566, "lon": -2.3522}, "tags": ["a", "ü"], "n": 2**63 - 1},
    {},
]


def test_a_batch_of_ordinary_payloads_never_reaches_the_stdlib_encoder(
    client: FlaskClient, fake: InMemoryEventPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [{"userId": "u", "eventType": "LOGIN", "payload": p} for p in PAYLOADS]
    monkeypatch.setattr(shared.json_codec, "_ENCODER", NoStdlib())
    answer = client.post("/events/batch", json={"events": events})
    assert answer.status_code == 201, answer.get_json()
    assert [r["payload"] for r in fake.records] == PAYLOADS


def test_a_single_event_is_written_by_orjson(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared.json_codec, "_ENCODER", NoStdlib())
    answer = client.post(
        "/events/generate", json={"userId": "u", "eventType": "LOGIN", "payload": PAYLOADS[1]}
    )
    assert answer.status_code == 201, answer.get_json()


@pytest.mark.parametrize("x", [1e-05, -9.5e-7, 5e-324])
def test_tiny_floats_keep_the_stdlib_spelling_in_the_record_value(
    client: FlaskClient, x: float
) -> None:
    # /events/generate answers with the very bytes it gave Kafka.
    answer = client.post(
        "/events/generate", json={"userId": "u", "eventType": "LOGIN", "payload": {"x": x}}
    )
    assert answer.status_code == 201
    assert f'"payload":{{"x":{x!r}}}'.encode() in answer.data
    stdlib = json.dumps(json.loads(answer.data), separators=(",", ":"), ensure_ascii=False)
    assert answer.data == stdlib.encode()

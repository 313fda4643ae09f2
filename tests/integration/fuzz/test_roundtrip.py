"""The round-trip property end to end, for a few generated events: what the real producer
app answers 201 to is in Kafka, and in the read API once stored, exactly as it was sent.

The pure version, with many more examples, is tests/unit/shared/test_roundtrip.py.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from marshmallow import ValidationError

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted, decide
from consumer_service.storage import RedisEventStore
from shared.events import EventInputSchema
from tests.integration.producer.conftest import read_topic
from tests.strategies import EVENT_TYPES, identical, inputs

from .conftest import running_producer

INPUT_SCHEMA = EventInputSchema(EVENT_TYPES)
PROCESSED_AT = "2026-11-24T04:29:53.123Z"


def test_what_the_producer_answers_201_is_stored_as_sent(
    kafka_bootstrap: str,
    topic: str,
    consumer_settings: ConsumerSettings,
    event_store: RedisEventStore,
    consumer_app: Flask,
) -> None:
    sent_by_id: dict[str, dict[str, Any]] = {}
    with running_producer(kafka_bootstrap, topic) as producer:
        client = producer.test_client()

        # Inside the test so that one app (one Kafka client) serves every example.
        # 200, not 100: Hypothesis also draws on string constants it finds in the loaded
        # code, so every new module shifts what it generates; at 100 the count of valid
        # events fell under the bound below once the tracking API's modules came in.
        @settings(
            max_examples=200,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(sent=inputs)
        def post(sent: dict[str, Any]) -> None:
            # As a client would send it: json.dumps writes a lone surrogate as a
            # "\ud800" escape and a non-finite float as NaN or Infinity.
            response = client.post(
                "/events/generate", data=json.dumps(sent), content_type="application/json"
            )
            try:
                INPUT_SCHEMA.load(sent)
            except ValidationError:
                assert response.status_code == 400, response.get_data(as_text=True)
                return
            assert response.status_code == 201, response.get_data(as_text=True)
            record = response.get_json()
            for name in ("userId", "eventType"):
                assert identical(record[name], sent[name])
            assert identical(record["payload"], sent.get("payload", {}))
            sent_by_id[record["eventId"]] = sent

        post()

    assert len(sent_by_id) >= 10, "too few examples were accepted to say anything"
    messages = read_topic(kafka_bootstrap, topic)
    assert sorted(json.loads(m.value())["eventId"] for m in messages) == sorted(sent_by_id)

    decisions = [
        decide(
            m.value(),
            m.partition(),
            m.offset(),
            consumer_settings.max_message_bytes,
            consumer_settings.event_types,
        )
        for m in messages
    ]
    accepted = [d for d in decisions if isinstance(d, Accepted)]
    assert accepted == decisions, [d for d in decisions if not isinstance(d, Accepted)]
    for decision, message in zip(accepted, messages, strict=True):
        sent = sent_by_id[decision.event_id]
        assert message.key() == sent["userId"].encode()
        stored = json.loads(decision.stored_form(PROCESSED_AT))
        for name in ("userId", "eventType"):
            assert identical(stored[name], sent[name])
        assert identical(stored["payload"], sent.get("payload", {}))

    event_store.store_batch(accepted, PROCESSED_AT)
    read_api = consumer_app.test_client()
    for event_id, sent in sent_by_id.items():
        response = read_api.get(f"/events/processed/{event_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        served = response.get_json()
        for name in ("userId", "eventType"):
            assert identical(served[name], sent[name])
        assert identical(served["payload"], sent.get("payload", {}))

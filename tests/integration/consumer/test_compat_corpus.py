"""The compatibility corpus (tests/corpus/events): a record of every schema version, the
original design's shape among them. Each must be accepted by the consumer, stored, and
read back through the read API unchanged (or, for the original shape, as the version 1
record it is read as), and must fit its version's served JSON Schema's fields. Adding a
schema version means adding its records here; changing how an old one reads fails this."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from producer_service import create_app as create_producer
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from shared.events import RECORD_SCHEMAS, event_key
from shared.json_codec import compact_json

from .conftest import Raw, WorkerThread, produce, wait_until, with_

CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "events"
ENTRIES = {path.stem: json.loads(path.read_text()) for path in sorted(CORPUS.glob("*.json"))}
PROCESSED = ("processedAt", "partition", "offset")


def expected(entry: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = entry.get("readsBackAs", entry["record"])
    return found


def test_the_corpus_holds_every_version_and_the_original_shape() -> None:
    versions = {expected(e)["schemaVersion"] for e in ENTRIES.values()}
    assert versions == set(RECORD_SCHEMAS)
    assert any("schemaVersion" not in e["record"] for e in ENTRIES.values())


def test_every_corpus_record_is_stored_and_read_back_unchanged(
    settings: ConsumerSettings,
    make_store: Callable[..., RedisEventStore],
    start_worker: Callable[..., WorkerThread],
) -> None:
    settings = with_(
        settings,
        common=CommonSettings(
            kafka_bootstrap_servers=settings.common.kafka_bootstrap_servers,
            kafka_topic=settings.common.kafka_topic,
            redis_url=settings.common.redis_url,
            event_types=("LOGIN", "LOGOUT", "PRODUCT_VIEW", "PAGE_VIEW", "*"),
        ),
    )
    records = [
        Raw(event_key(expected(e)).encode(), json.dumps(e["record"]).encode())
        for e in ENTRIES.values()
    ]
    produce(settings.common.kafka_bootstrap_servers, settings.common.kafka_topic, records)
    store = make_store(settings)
    worker = start_worker(settings, store)
    wait_until(lambda: store.stats()["stored"] == len(ENTRIES), 30, "the corpus stored")
    worker.stop()
    assert store.stats()["deadLettered"] == 0
    client = create_app(settings, store).test_client()
    for name, entry in ENTRIES.items():
        want = expected(entry)
        answer = client.get(f"/events/processed/{want['eventId']}")
        assert answer.status_code == 200, name
        stored = answer.get_json()
        record = {k: v for k, v in stored.items() if k not in PROCESSED}
        # Field order too: the stored form is the record's own JSON.
        assert list(record.items()) == list(want.items()), name
        assert compact_json(record) == compact_json(want), name
        page = client.get(
            "/events/processed",
            query_string={"userId": event_key(want), "schemaVersion": want["schemaVersion"]},
        ).get_json()
        assert want["eventId"] in [e["eventId"] for e in page["events"]], name


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_corpus_record_fits_its_versions_json_schema(
    name: str, settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]
) -> None:
    want = expected(ENTRIES[name])
    consumer = create_app(settings, make_store(settings)).test_client()
    producer_app = create_producer(ProducerSettings())
    try:
        for client in (consumer, producer_app.test_client()):
            answer = client.get(f"/schemas/events/v{want['schemaVersion']}.json")
            assert answer.status_code == 200
            assert answer.mimetype == "application/schema+json"
            schema = answer.get_json()
            assert set(schema["required"]) <= set(want) <= set(schema["properties"]), name
            assert schema["properties"]["schemaVersion"]["type"] == "integer"
            assert client.get("/schemas/events/v9.json").status_code == 404
    finally:
        publisher_of(producer_app).close(1)

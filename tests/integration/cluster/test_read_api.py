"""The read API on a cluster: found by REDIS_URL alone, pages with the cluster's opaque
cursor without skipping or repeating, finds one event, sums the stats."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from consumer_service.api import build_spec, create_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import RedisClusterEventStore
from shared.config import CommonSettings
from tests.clusterharness import LocalRedisCluster
from tests.integration.consumer.conftest import make_record

NOW = "2026-11-24T05:00:00.000Z"


@pytest.fixture
def stored(redis_cluster: LocalRedisCluster, unique: str) -> Iterator[tuple[str, list[Accepted]]]:
    prefix = f"api:{unique}"
    store = RedisClusterEventStore(redis_cluster.url, prefix, 3600)
    events = [Accepted(make_record(f"u{i % 6}"), i % 6, i) for i in range(20)]
    store.store_batch(events, NOW)
    yield prefix, events
    store.close()


@pytest.fixture
def client(redis_cluster: LocalRedisCluster, stored: tuple[str, list[Accepted]]) -> FlaskClient:
    settings = ConsumerSettings(
        common=CommonSettings(redis_url=redis_cluster.url), redis_prefix=stored[0]
    )
    return create_app(settings).test_client()


def test_pages_cover_every_event_once(
    client: FlaskClient, stored: tuple[str, list[Accepted]]
) -> None:
    ids: list[str] = []
    url = "/events/processed?limit=3"
    while True:
        body = client.get(url).get_json()
        ids += [e["eventId"] for e in body["events"]]
        assert body["total"] == 20
        if body["next"] is None:
            break
        assert body["next"].startswith("v1.")
        url = f"/events/processed?limit=3&cursor={body['next']}"
    assert sorted(ids) == sorted(a.event_id for a in stored[1])
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("cursor", ["5", "v1.@", "v1.MDo1LA"])
def test_a_cursor_the_cluster_did_not_make_is_a_400(client: FlaskClient, cursor: str) -> None:
    response = client.get(f"/events/processed?cursor={cursor}")
    assert response.status_code == 400
    assert response.get_json()["error"]["type"] == "invalid_query"


def test_one_event_and_the_stats(client: FlaskClient, stored: tuple[str, list[Accepted]]) -> None:
    event = stored[1][7]
    body = client.get(f"/events/processed/{event.event_id}").get_json()
    assert (body["eventId"], body["partition"], body["offset"]) == (event.event_id, 1, 7)
    stats = client.get("/stats").get_json()
    assert (stats["processed"], stats["stored"]) == (20, 20)


def test_the_cluster_document_declares_the_cursors_the_cluster_makes(client: FlaskClient) -> None:
    def pattern(cluster: bool) -> str:
        params = build_spec(cluster=cluster).to_dict()["paths"]["/events/processed"]["get"]
        (cursor,) = (p for p in params["parameters"] if p["name"] == "cursor")
        assert "v1." in cursor["description"] and "digits" in cursor["description"]
        return str(cursor["schema"]["pattern"])

    token = client.get("/events/processed?limit=3").get_json()["next"]
    assert re.fullmatch(pattern(cluster=True), token)
    assert not re.fullmatch(pattern(cluster=False), token)
    # And the app on a cluster serves that document, not the single-node one.
    served = client.get("/openapi.json").get_json()["paths"]["/events/processed"]["get"]
    (cursor,) = (p for p in served["parameters"] if p["name"] == "cursor")
    assert cursor["schema"]["pattern"] == pattern(cluster=True)

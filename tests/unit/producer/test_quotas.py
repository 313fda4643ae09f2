"""PRODUCER_RATE_LIMIT with in-memory counters: what is charged, what a refusal looks like,
and that nothing over the limit is published."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from producer_service import create_app
from producer_service.config import ProducerSettings
from shared.errors import ConfigError
from tests.unit.producer.fakes import InMemoryEventPublisher

ROOT = Path(__file__).resolve().parents[3]
GOOD = {"userId": "user-1", "eventType": "LOGIN", "payload": {"page": "/home"}}


def limited_app(
    settings: ProducerSettings, fake: InMemoryEventPublisher, rate: str, **changes: Any
) -> Flask:
    app = create_app(dataclasses.replace(settings, rate_limit=rate, **changes), publisher=fake)
    app.config["TESTING"] = True
    return app


def post(client: FlaskClient, path: str, body: Any, **headers: str) -> Any:
    return client.post(
        path, data=json.dumps(body), content_type="application/json", headers=headers
    )


def batch_of(n: int) -> dict[str, Any]:
    return {"events": [{**GOOD, "payload": {"i": i}} for i in range(n)]}


def assert_rate_limited(response: Any) -> str:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    retry_after = response.headers["Retry-After"]
    # An estimate of when a unit frees; never 0 (retry at once) nor past two windows.
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 120
    error = response.get_json()["error"]
    assert error["type"] == "rate_limited"
    assert "Nothing was published" in error["message"]
    message: str = error["message"]
    return message


def test_off_by_default(client: FlaskClient, fake: InMemoryEventPublisher) -> None:
    assert ProducerSettings().rate_limits == ()
    assert ProducerSettings.from_env({}).rate_limit == ""
    for _ in range(30):
        assert post(client, "/events/generate", GOOD).status_code == 201
    for _ in range(10):
        assert post(client, "/events/batch", batch_of(5)).status_code == 201
    assert len(fake.records) == 80


def test_over_the_limit_is_429_and_publishes_nothing(
    settings: ProducerSettings, fake: InMemoryEventPublisher
) -> None:
    client = limited_app(settings, fake, "3/minute").test_client()
    for _ in range(3):
        assert post(client, "/events/generate", GOOD).status_code == 201
    message = assert_rate_limited(post(client, "/events/generate", GOOD))
    assert "3 per 1 minute per client address" in message
    assert_rate_limited(post(client, "/events/batch", batch_of(1)))
    assert len(fake.records) == 3


def test_over_the_limit_is_refused_before_the_body_is_read(
    settings: ProducerSettings, fake: InMemoryEventPublisher
) -> None:
    client = limited_app(settings, fake, "1/minute").test_client()
    assert post(client, "/events/generate", GOOD).status_code == 201
    # Invalid, but over the limit: the 429 comes first, so refused clients cost no parsing.
    assert_rate_limited(post(client, "/events/generate", {"userId": ""}))


def test_a_batch_costs_one_per_event(
    settings: ProducerSettings, fake: InMemoryEventPublisher
) -> None:
    client = limited_app(settings, fake, "5/minute").test_client()
    assert post(client, "/events/batch", batch_of(3)).status_code == 201
    # 3 + 3 > 5: refused whole, and the refusal takes nothing from what is left.
    message = assert_rate_limited(post(client, "/events/batch", batch_of(3)))
    assert "would take 3" in message
    assert post(client, "/events/batch", batch_of(2)).status_code == 201
    assert_rate_limited(post(client, "/events/generate", GOOD))
    assert len(fake.records) == 5


def test_generate_and_batch_share_one_quota(
    settings: ProducerSettings, fake: InMemoryEventPublisher
) -> None:
    client = limited_app(settings, fake, "4/minute").test_client()
    assert post(client, "/events/generate", GOOD).status_code == 201
    assert post(client, "/events/batch", batch_of(3)).status_code == 201
    assert_rate_limited(post(client, "/events/generate", GOOD))
    assert_rate_limited(post(client, "/events/batch", batch_of(1)))
    assert len(fake.records) == 4


def test_a_batch_larger_than_the_limit_says_so(
    settings: ProducerSettings, fake: InMemoryEventPublisher
) -> None:
    client = limited_app(settings, fake, "4/minute").test_client()
    message = assert_rate_limited(post(client, "/events/batch", batch_of(5)))
    assert "larger than the whole rate limit" in message
    assert fake.records == []
    # It took nothing: a batch that fits still passes.
    assert post(client, "/events/batch", batch_of(4)).status_code == 201


def test_the_quota_is_per_api_key(settings: ProducerSettings, fake: InMemoryEventPublisher) -> None:
    app = limited_app(settings, fake, "2/minute", api_keys=("k1", "k2"))
    client = app.test_client()
    assert post(client, "/events/generate", GOOD, **{"X-API-Key": "k1"}).status_code == 201
    # The same key as a bearer token draws on the same quota.
    bearer = {"Authorization": "Bearer k1"}
    assert post(client, "/events/generate", GOOD, **bearer).status_code == 201
    message = assert_rate_limited(post(client, "/events/generate", GOOD, **{"X-API-Key": "k1"}))
    assert "per credential" in message
    assert post(client, "/events/generate", GOOD, **{"X-API-Key": "k2"}).status_code == 201
    assert len(fake.records) == 3


def test_refused_keys_take_no_quota(
    settings: ProducerSettings, fake: InMemoryEventPublisher
) -> None:
    client = limited_app(settings, fake, "1/minute", api_keys=("k1",)).test_client()
    for _ in range(3):
        assert post(client, "/events/generate", GOOD, **{"X-API-Key": "bad"}).status_code == 401
        assert post(client, "/events/generate", GOOD).status_code == 401
    assert post(client, "/events/generate", GOOD, **{"X-API-Key": "k1"}).status_code == 201


def test_the_ops_routes_are_not_limited(
    settings: ProducerSettings, fake: InMemoryEventPublisher
) -> None:
    client = limited_app(settings, fake, "1/minute").test_client()
    assert post(client, "/events/generate", GOOD).status_code == 201
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        for _ in range(3):
            assert client.get(path).status_code == 200, path


def test_the_openapi_document_declares_429_when_limited(
    settings: ProducerSettings, fake: InMemoryEventPublisher
) -> None:
    unlimited = create_app(settings, publisher=fake).test_client().get("/openapi.json")
    limited = limited_app(settings, fake, "3/minute").test_client().get("/openapi.json")
    for path in ("/events/generate", "/events/batch"):
        assert "429" not in unlimited.get_json()["paths"][path]["post"]["responses"]
        answer = limited.get_json()["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in answer["headers"]
        assert "3/minute" in answer["description"]


@pytest.mark.parametrize("rate", ["lots", "1000/fortnight", "0/second", "10 a minute"])
def test_a_bad_rate_stops_the_start(rate: str) -> None:
    with pytest.raises(ConfigError, match="PRODUCER_RATE_LIMIT"):
        ProducerSettings.from_env({"PRODUCER_RATE_LIMIT": rate})


def test_rates_and_storage_from_env() -> None:
    s = ProducerSettings.from_env(
        {
            "PRODUCER_RATE_LIMIT": " 100/second;5000/hour ",
            "REDIS_URL": "redis://:pw@redis:6379/1",
            "PRODUCER_RATE_LIMIT_PREFIX": "q",
        }
    )
    assert [str(item) for item in s.rate_limits] == ["100 per 1 second", "5000 per 1 hour"]
    assert (s.rate_limit_redis_url, s.rate_limit_prefix) == ("redis://:pw@redis:6379/1", "q")
    assert "pw" not in repr(s)
    # Without REDIS_URL in the environment the counters stay in memory.
    assert ProducerSettings.from_env({}).rate_limit_redis_url is None


def test_producer_service_exits_2_on_a_bad_rate() -> None:
    script = Path(sys.executable).with_name("producer-service")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "producer_service"]
    proc = subprocess.run(
        command,
        env={"PATH": "/usr/bin:/bin", "PRODUCER_RATE_LIMIT": "fast"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "PRODUCER_RATE_LIMIT" in proc.stderr

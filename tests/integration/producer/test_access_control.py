"""The producer's access control against the real Kafka: bearer JWTs (HS256, RS256,
ES256) and scoped API keys on /events, the 401 and 403 answers, and the routes that stay
open."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from producer_service import create_app
from producer_service.app import publisher_of
from producer_service.config import ProducerSettings
from shared.auth import AuthSettings
from tests.services import running_producer
from tests.tokens import SECRET, bearer, ec_key, hs256, public_pem, rsa_key, sign

from .conftest import read_topic

EVENT = {"userId": "ann", "eventType": "LOGIN", "payload": {"n": 1}}
WRITE = "events:write"


@pytest.fixture
def make_client(kafka_settings: ProducerSettings) -> Iterator[Any]:
    apps = []

    def build(**changes: Any) -> FlaskClient:
        app = create_app(replace(kafka_settings, **changes))
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        publisher_of(app).close(5)


def post(client: FlaskClient, headers: dict[str, str] | None = None) -> Any:
    return client.post("/events/generate", json=EVENT, headers=headers or {})


def assert_401(response: Any, invalid_token: bool) -> str:
    assert response.status_code == 401, response.get_data(as_text=True)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge == ('Bearer error="invalid_token"' if invalid_token else "Bearer")
    error = response.get_json()["error"]
    assert error["type"] == "unauthorized"
    return str(error["message"])


def test_hs256_tokens(make_client: Any, kafka_bootstrap: str, topic: str) -> None:
    client = make_client(
        auth=AuthSettings(jwt_secret=SECRET, jwt_audience="pipeline", jwt_issuer="idp")
    )
    good = hs256(WRITE, aud="pipeline", iss="idp")
    accepted = post(client, bearer(good))
    assert accepted.status_code == 201, accepted.get_json()
    # A second request with the same token (answered from the cache) is let in too.
    assert post(client, bearer(good)).status_code == 201
    assert len(read_topic(kafka_bootstrap, topic)) == 2

    assert "required" in assert_401(post(client), invalid_token=False)
    expired = hs256(WRITE, aud="pipeline", iss="idp", exp=int(time.time()) - 120)
    assert "expired" in assert_401(post(client, bearer(expired)), invalid_token=True)
    forged = hs256(WRITE, secret="x" * 32, aud="pipeline", iss="idp")
    assert "Signature" in assert_401(post(client, bearer(forged)), invalid_token=True)
    elsewhere = hs256(WRITE, aud="other", iss="idp")
    assert "Audience" in assert_401(post(client, bearer(elsewhere)), invalid_token=True)
    stranger = hs256(WRITE, aud="pipeline", iss="someone")
    assert "issuer" in assert_401(post(client, bearer(stranger)), invalid_token=True).lower()

    reader = post(client, bearer(hs256("events:read events:erase", aud="pipeline", iss="idp")))
    assert reader.status_code == 403
    assert reader.get_json()["error"]["type"] == "forbidden"
    assert WRITE in reader.get_json()["error"]["message"]
    assert reader.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="events:write"'
    )
    # Nothing refused reached Kafka.
    assert len(read_topic(kafka_bootstrap, topic)) == 2


@pytest.mark.parametrize(("make_key", "algorithm"), [(rsa_key, "RS256"), (ec_key, "ES256")])
def test_public_key_tokens(make_client: Any, tmp_path: Path, make_key: Any, algorithm: str) -> None:
    private = make_key()
    client = make_client(
        auth=AuthSettings(jwt_public_key_file=public_pem(private, tmp_path / "key.pem"))
    )
    assert post(client, bearer(sign(private, algorithm, WRITE))).status_code == 201
    other = make_key()
    assert_401(post(client, bearer(sign(other, algorithm, WRITE))), invalid_token=True)
    assert post(client, bearer(sign(private, algorithm, "events:read"))).status_code == 403


def test_api_keys_with_and_without_scopes(make_client: Any) -> None:
    client = make_client(api_keys=("plain", "writer events:write", "reader events:read"))
    for key in ("plain", "writer"):
        assert post(client, {"X-API-Key": key}).status_code == 201
        assert post(client, bearer(key)).status_code == 201
    assert post(client, {"X-API-Key": "reader"}).status_code == 403
    assert_401(post(client, {"X-API-Key": "nope"}), invalid_token=False)
    assert_401(post(client, bearer("nope")), invalid_token=True)
    # Both routes are guarded.
    batch = client.post("/events/batch", json={"events": [EVENT]})
    assert_401(batch, invalid_token=False)


def test_keys_and_tokens_side_by_side(make_client: Any) -> None:
    client = make_client(api_keys=("plain",), auth=AuthSettings(jwt_secret=SECRET))
    assert post(client, bearer("plain")).status_code == 201
    assert post(client, bearer(hs256(WRITE))).status_code == 201
    assert_401(post(client, bearer(hs256(WRITE, secret="y" * 32))), invalid_token=True)


def test_operational_routes_and_docs_stay_open(make_client: Any) -> None:
    client = make_client(api_keys=("plain",), auth=AuthSettings(jwt_secret=SECRET))
    for path in ("/health", "/ready", "/metrics", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_an_open_producer_takes_requests_without_credentials(make_client: Any) -> None:
    assert post(make_client()).status_code == 201


def test_the_document_declares_the_schemes_and_the_refusals(make_client: Any) -> None:
    client = make_client(api_keys=("plain",), auth=AuthSettings(jwt_secret=SECRET))
    document = client.get("/openapi.json").get_json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    for path in ("/events/generate", "/events/batch"):
        operation = document["paths"][path]["post"]
        assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}]
        assert {"401", "403"} <= operation["responses"].keys()
    assert "security" not in document["paths"]["/health"]["get"]
    open_document = make_client().get("/openapi.json").get_json()
    assert "securitySchemes" not in open_document["components"]
    assert "401" not in open_document["paths"]["/events/generate"]["post"]["responses"]


def run_service(
    kafka_bootstrap: str, topic: str, check: Callable[[str], None], **env: str
) -> tuple[str, int]:
    """Run producer-service (two workers, INFO logs, `env`), call `check(base_url)` once
    it is ready, stop it; its log (stderr) and port."""
    with running_producer(
        kafka_bootstrap, topic, PRODUCER_WORKERS="2", LOG_LEVEL="INFO", **env
    ) as producer:
        check(producer.base)
    return producer.log(), int(producer.base.rsplit(":", 1)[1])


def test_an_open_producer_on_every_interface_warns_once(kafka_bootstrap: str, topic: str) -> None:
    def open_to_all(base: str) -> None:
        assert requests.post(f"{base}/events/generate", json=EVENT, timeout=10).status_code == 201

    log, port = run_service(kafka_bootstrap, topic, open_to_all, PRODUCER_BIND_HOST="0.0.0.0")
    assert log.count("NO ACCESS CONTROL") == 1, log
    assert f'"bind":"0.0.0.0:{port}"' in log.replace(" ", "")


def test_a_guarded_or_loopback_producer_does_not_warn_nor_print_secrets(
    kafka_bootstrap: str, topic: str
) -> None:
    key = "key-that-must-not-be-printed"

    def guarded(base: str) -> None:
        url = f"{base}/events/generate"
        refused = requests.post(url, json=EVENT, timeout=10)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        let_in = requests.post(url, json=EVENT, headers=bearer(hs256(WRITE)), timeout=10)
        assert let_in.status_code == 201
        keyed = requests.post(url, json=EVENT, headers={"X-API-Key": key}, timeout=10)
        assert keyed.status_code == 201

    log, _ = run_service(
        kafka_bootstrap,
        topic,
        guarded,
        PRODUCER_BIND_HOST="0.0.0.0",
        PRODUCER_API_KEYS=f"{key} events:write",
        AUTH_JWT_SECRET=SECRET,
    )
    assert '"starting"' in log.replace(" ", "")
    assert "NO ACCESS CONTROL" not in log
    assert key not in log and SECRET not in log

    log, _ = run_service(kafka_bootstrap, topic, lambda base: None, PRODUCER_BIND_HOST="127.0.0.1")
    assert "NO ACCESS CONTROL" not in log

"""The read API's access control against the real Redis and Kafka: scoped API keys and
JWTs on the reads, /stats and the dashboard's data, the routes that stay open, and what
the dashboard's data leaves out for a reader without credentials."""

from __future__ import annotations

import functools
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from consumer_service.api import create_app
from consumer_service.api.dashboard.views import state_of
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import RedisEventStore
from shared.auth import AuthSettings
from shared.config import CommonSettings
from tests.tokens import SECRET, bearer, hs256, public_pem, rsa_key, sign

from .conftest import WorkerThread, make_record, wait_until
from .test_service import free_port, get_json, service_env, spawn  # noqa: F401

KEYS = ("reader events:read", "eraser events:erase", "all")
READ = "events:read"


@pytest.fixture
def make_client(settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]) -> Any:
    apps = []

    def build(base: ConsumerSettings | None = None, **changes: Any) -> FlaskClient:
        s = replace(base or settings, **changes)
        app = create_app(s, make_store(s))
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        state_of(app).close()


@pytest.fixture
def event_id(settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]) -> str:
    record = make_record("ann", payload={"private": "data"})
    make_store(settings).store_batch([Accepted(record, 0, 0)], "2026-01-02T00:00:00.000Z")
    return str(record["eventId"])


def guarded_paths(event_id: str) -> list[str]:
    return ["/events/processed", f"/events/processed/{event_id}", "/stats", "/dashboard/data"]


def test_api_keys_and_their_scopes(make_client: Any, event_id: str) -> None:
    client = make_client(api_keys=KEYS)
    for path in guarded_paths(event_id):
        for key in ("reader", "all"):
            assert client.get(path, headers={"X-API-Key": key}).status_code == 200, path
            assert client.get(path, headers=bearer(key)).status_code == 200, path
        refused = client.get(path, headers={"X-API-Key": "eraser"})
        assert refused.status_code == 403, path
        assert refused.get_json()["error"]["type"] == "forbidden"
        unknown = client.get(path)
        assert unknown.status_code == 401, path
        assert unknown.headers["WWW-Authenticate"] == "Bearer"
        assert unknown.get_json()["error"]["type"] == "unauthorized"
        assert "data" not in unknown.get_data(as_text=True)
        wrong = client.get(path, headers=bearer("nope"))
        assert wrong.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    page = client.get("/events/processed", headers={"X-API-Key": "reader"}).get_json()
    assert [e["eventId"] for e in page["events"]] == [event_id]


def test_jwts(make_client: Any, event_id: str, tmp_path: Path) -> None:
    client = make_client(auth=AuthSettings(jwt_secret=SECRET, jwt_leeway_seconds=0))
    path = f"/events/processed/{event_id}"
    assert client.get(path, headers=bearer(hs256(READ))).get_json()["eventId"] == event_id
    for bad in (
        hs256(READ, exp=int(time.time()) - 1),
        hs256(READ, secret="z" * 32),
        hs256(READ, exp=None),
    ):
        assert client.get(path, headers=bearer(bad)).status_code == 401
    assert client.get(path, headers=bearer(hs256("events:write events:erase"))).status_code == 403

    private = rsa_key()
    keyed = make_client(
        auth=AuthSettings(jwt_public_key_file=public_pem(private, tmp_path / "k.pem"))
    )
    assert keyed.get("/stats", headers=bearer(sign(private, "RS256", READ))).status_code == 200
    assert keyed.get("/stats", headers=bearer(hs256(READ))).status_code == 401


def test_operational_routes_docs_and_the_dashboard_page_stay_open(make_client: Any) -> None:
    client = make_client(api_keys=KEYS, auth=AuthSettings(jwt_secret=SECRET))
    for path in (
        "/health",
        "/metrics",
        "/openapi.json",
        "/dashboard",
        "/dashboard/dashboard.js",
        "/dashboard/dashboard.css",
    ):
        assert client.get(path).status_code == 200, path
    # Ready or not, /ready answers without asking for a credential.
    assert client.get("/ready").status_code in (200, 503)


def test_the_document_declares_the_guarded_reads(make_client: Any, event_id: str) -> None:
    document = make_client(api_keys=KEYS).get("/openapi.json").get_json()
    assert set(document["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    for path in ("/events/processed", "/events/processed/{eventId}", "/stats", "/dashboard/data"):
        operation = document["paths"][path]["get"]
        assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], path
        assert {"401", "403"} <= operation["responses"].keys(), path
    for path in ("/health", "/ready", "/metrics", "/dashboard"):
        assert "security" not in document["paths"][path]["get"], path


def members_of(client: FlaskClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = client.get("/dashboard/data", headers=headers).get_json()[
        "kafka"
    ]["members"]
    return members


def test_the_dashboard_shows_member_hosts_to_authenticated_readers_only(
    settings: ConsumerSettings,
    make_client: Any,
    start_worker: Callable[..., WorkerThread],
) -> None:
    start_worker(settings)
    open_api = make_client()
    wait_until(lambda: members_of(open_api, {}), 30, "the worker in the group")
    (member,) = members_of(open_api, {})
    assert member["host"] is None and member["clientId"]
    keyed = make_client(api_keys=KEYS)
    wait_until(lambda: members_of(keyed, {"X-API-Key": "reader"}), 30, "the worker")
    (member,) = members_of(keyed, {"X-API-Key": "reader"})
    assert member["host"]


def test_the_dashboard_names_no_address_in_errors_without_credentials(
    settings: ConsumerSettings, make_client: Any
) -> None:
    # Nothing listens on port 1 of this host, and Redis refuses a wrong password.
    unreachable = replace(
        settings,
        common=CommonSettings(
            kafka_bootstrap_servers="127.0.0.1:1",
            kafka_topic=settings.common.kafka_topic,
            redis_url="redis://127.0.0.1:1/0",
        ),
    )
    open_body = make_client(unreachable).get("/dashboard/data").get_json()
    assert open_body["kafka"]["error"] == "Kafka did not answer."
    assert open_body["redis"]["error"] == "Redis did not answer."
    assert "127.0.0.1" not in str(open_body)
    keyed = make_client(unreachable, api_keys=KEYS)
    detailed = keyed.get("/dashboard/data", headers={"X-API-Key": "reader"}).get_json()
    assert detailed["kafka"]["error"].startswith("Kafka did not answer: ")
    assert detailed["redis"]["error"] != "Redis did not answer."


def test_the_service_warns_once_when_open_and_never_prints_keys(
    settings: ConsumerSettings,
    spawn: Callable[..., tuple[subprocess.Popen[bytes], Path]],  # noqa: F811
) -> None:
    key = "consumer-key-not-to-print"
    logs = []
    for extra in ({}, {"CONSUMER_API_KEYS": f"{key} events:read", "AUTH_JWT_SECRET": SECRET}):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc, log_path = spawn(service_env(settings, port, CONSUMER_API_WORKERS="2", **extra))
        wait_until(functools.partial(get_json, f"{base}/health"), 30, "the API")
        stats = requests.get(f"{base}/stats", headers={"X-API-Key": key}, timeout=5)
        assert stats.status_code == 200
        if extra:
            assert requests.get(f"{base}/stats", timeout=5).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        logs.append(log_path.read_text())
    open_log, guarded_log = logs
    assert open_log.count("NO ACCESS CONTROL") == 1, open_log
    assert "NO ACCESS CONTROL" not in guarded_log
    assert key not in guarded_log and SECRET not in guarded_log
    assert "consumer starting" in guarded_log

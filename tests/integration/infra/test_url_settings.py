"""REDIS_URL at start, against the real services and Redis: a password with raw `/ ? # @ %`
stops either service with exit 2 and a message that quotes none of it; the same password
percent-encoded reaches Redis (a Redis ACL user made for the test, deleted after)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
from flask.testing import FlaskClient

from consumer_service.config import ConsumerSettings
from consumer_service.storage import open_store
from producer_service import create_app
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from tests.services import ROOT, free_port
from tests.unit.producer.fakes import InMemoryEventPublisher

pytestmark = pytest.mark.integration

# Letter pairs found in no message, so any piece of the password is easy to spot.
PASSWORD = "Qz/Kx?Vw#Jq@Zk:Yp%Xr"
PIECES = re.findall(r"[A-Za-z]{2}", PASSWORD)
GOOD = {"userId": "user-1", "eventType": "LOGIN"}


def host_port(redis_url: str) -> str:
    return redis_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]


@pytest.mark.parametrize("service", ["consumer_service", "producer_service"])
@pytest.mark.parametrize("password", [PASSWORD, "Qz/Kx", "Qz?Kx", "Qz#Kx", "Qz@Kx", "Qz%Kx"])
def test_a_raw_password_stops_the_service_with_exit_2(
    service: str, password: str, unique: str
) -> None:
    url = f"redis://app:{password}@127.0.0.1:6379/0"
    # Names and ports of this test alone, should the service start after all.
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": url,
        "LOG_LEVEL": "WARNING",
        "KAFKA_TOPIC": f"test-{unique}",
        "KAFKA_CONSUMER_GROUP": f"test-group-{unique}",
        "CONSUMER_REDIS_PREFIX": f"test:{unique}",
        "CONSUMER_PORT": str(free_port()),
        "PRODUCER_PORT": str(free_port()),
        "PRODUCER_BIND_HOST": "127.0.0.1",
    }
    done = subprocess.run(
        [sys.executable, "-m", service], env=env, cwd=ROOT, capture_output=True, timeout=30
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert "REDIS_URL" in output and "redis://app:***@127.0.0.1:6379/0" in output
    assert "Traceback" not in output
    for piece in re.findall(r"[A-Za-z]{2}", password):
        assert piece not in output


@pytest.fixture
def acl_url(redis_client: redis.Redis, redis_url: str, redis_prefix: str) -> Iterator[str]:
    """REDIS_URL of a Redis user made for this test, whose password is PASSWORD, allowed
    only the keys under `redis_prefix`; percent-encoded as a URL needs."""
    user = f"test-url-{redis_prefix.rsplit(':', 1)[-1]}"
    redis_client.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{PASSWORD}"],
        keys=[f"{redis_prefix}:*"],
        commands=["+@all"],
    )
    try:
        yield f"redis://{user}:{quote(PASSWORD, safe='')}@{host_port(redis_url)}/0"
    finally:
        redis_client.acl_deluser(user)


def test_an_encoded_password_reaches_redis_from_the_consumer(
    acl_url: str, redis_prefix: str
) -> None:
    settings = ConsumerSettings(common=CommonSettings(redis_url=acl_url), redis_prefix=redis_prefix)
    # Auto mode: INFO cluster is asked with these credentials first.
    store = open_store(settings, timeout_seconds=2.0, writer=False)
    try:
        assert store.ping()
        assert store.stats()["processed"] == 0
    finally:
        store.close()


def test_an_encoded_password_reaches_redis_from_the_producer(
    acl_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = ProducerSettings.from_env(
        {
            "REDIS_URL": acl_url,
            "PRODUCER_RATE_LIMIT": "2/minute",
            "PRODUCER_RATE_LIMIT_PREFIX": redis_prefix,
        }
    )
    client: FlaskClient = create_app(settings, publisher=InMemoryEventPublisher()).test_client()
    answers = [
        client.post("/events/generate", data=json.dumps(GOOD), content_type="application/json")
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 201, 429]
    # Counted in Redis, not in the in-memory fallback a refused login would fall back to.
    assert list(redis_client.scan_iter(match=f"{redis_prefix}:*"))

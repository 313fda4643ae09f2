"""The pipeline against a broker that needs credentials: the producer, the consumer, the
dead-letter topic and pipeline-admin all through the SASL listener, with the settings of
KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_*; a wrong password is a clear error within seconds,
and no password ever reaches a log."""

from __future__ import annotations

import io
import time
from dataclasses import replace

import pytest
import requests
from confluent_kafka import Producer

from consumer_service.admin.cli import main as admin_main
from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.storage import RedisEventStore
from infra.topics import wait_for_broker
from shared.config import CommonSettings
from shared.kafka import KafkaAuthenticationFailed, client_config
from tests.services import free_port

from .conftest import Spawn, kafka_env, status_of, wait_until, wrong_password

EVENT = {"userId": "sasl-user", "eventType": "LOGIN", "payload": {"via": "SCRAM-SHA-512"}}
# How long a refused login may take to be reported: librdkafka's first attempt plus one
# metadata slice, with room for a loaded machine.
REFUSAL_SECONDS = 10


def _admin(common: CommonSettings, topic: str, *args: str) -> tuple[int, str, str, float]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": common.kafka_bootstrap_servers,
        "KAFKA_TOPIC": topic,
        "KAFKA_SECURITY_PROTOCOL": common.kafka_security_protocol,
        "KAFKA_SASL_MECHANISM": common.kafka_sasl_mechanism or "",
        "KAFKA_SASL_USERNAME": common.kafka_sasl_username or "",
        "KAFKA_SASL_PASSWORD": common.kafka_sasl_password or "",
    }
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = admin_main(["dlq", *args], env=env, out=out, err=err)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - started


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_both_mechanisms_log_in(sasl_common: CommonSettings, mechanism: str) -> None:
    common = replace(sasl_common, kafka_sasl_mechanism=mechanism)
    assert wait_for_broker(common, 10)
    started = time.monotonic()
    with pytest.raises(KafkaAuthenticationFailed, match="Authentication failed"):
        wait_for_broker(wrong_password(common), 60)
    assert time.monotonic() - started < REFUSAL_SECONDS


def test_the_pipeline_runs_through_the_sasl_listener(
    sasl_common: CommonSettings, sasl_topic: str, spawn: Spawn, redis_prefix: str
) -> None:
    producer_port, consumer_port = free_port(), free_port()
    env = kafka_env(sasl_common, sasl_topic)
    producer, producer_log = spawn(
        "producer-service",
        {
            **env,
            "PRODUCER_BIND_HOST": "127.0.0.1",
            "PRODUCER_PORT": str(producer_port),
            "PRODUCER_WORKERS": "1",
        },
    )
    consumer, consumer_log = spawn(
        "consumer-service",
        {
            **env,
            "KAFKA_CONSUMER_GROUP": f"{sasl_topic}-group",
            "CONSUMER_REDIS_PREFIX": redis_prefix,
            "CONSUMER_PORT": str(consumer_port),
            "CONSUMER_API_WORKERS": "1",
            "CONSUMER_SESSION_TIMEOUT_MS": "6000",
        },
    )
    producer_url = f"http://127.0.0.1:{producer_port}"
    consumer_url = f"http://127.0.0.1:{consumer_port}"
    wait_until(lambda: status_of(f"{producer_url}/ready") == 200, 60, "the producer")
    wait_until(lambda: status_of(f"{consumer_url}/ready") == 200, 60, "the consumer")

    # The producer publishes through SASL.
    answer = requests.post(f"{producer_url}/events/generate", json=EVENT, timeout=10)
    assert answer.status_code == 201, answer.text
    event_id = answer.json()["eventId"]

    # A poison record, written with the shared builder's SASL settings.
    poison = Producer(client_config(sasl_common, {"acks": "all"}))
    poison.produce(sasl_topic, key=b"sasl-user", value=b"{not json")
    assert poison.flush(15) == 0

    # The worker consumed through SASL and stored the event...
    stored = wait_until(
        lambda: status_of(f"{consumer_url}/events/processed/{event_id}") == 200,
        30,
        "the event to be stored",
    )
    assert stored

    # ...and dead-lettered the poison record to the DLQ it created, also through SASL;
    # pipeline-admin reads it there with the same settings.
    def summary() -> str | None:
        code, out, _, _ = _admin(sasl_common, sasl_topic, "summary", "--timeout", "10")
        return out if code == 0 and "not_json" in out else None

    out = wait_until(summary, 30, "the poison record in the DLQ")
    assert f"{sasl_topic}.dlq" in str(out)

    assert producer.poll() is None and consumer.poll() is None
    for log_path in (producer_log, consumer_log):
        text = log_path.read_text()
        assert sasl_common.kafka_sasl_password not in text, log_path.name
    # The start-up line shows the settings, secrets hidden.
    assert '"kafka_sasl_password":"***"' in consumer_log.read_text()
    assert '"kafka_sasl_password":"***"' in producer_log.read_text()


def test_a_wrong_password_stops_the_consumer_at_start(
    sasl_common: CommonSettings, sasl_topic: str, spawn: Spawn, redis_prefix: str
) -> None:
    bad = wrong_password(sasl_common)
    env = {
        **kafka_env(bad, sasl_topic),
        "KAFKA_CONSUMER_GROUP": f"{sasl_topic}-group",
        "CONSUMER_REDIS_PREFIX": redis_prefix,
        "CONSUMER_PORT": str(free_port()),
        "CONSUMER_API_WORKERS": "1",
    }
    started = time.monotonic()
    consumer, log_path = spawn("consumer-service", env)
    code = consumer.wait(30)
    elapsed = time.monotonic() - started
    text = log_path.read_text()
    assert code == 2, text
    assert elapsed < 30
    assert "Kafka refused this client" in text
    assert "Authentication failed" in text
    assert "KAFKA_SASL_PASSWORD" in text
    assert bad.kafka_sasl_password not in text


def test_a_wrong_password_stops_pipeline_admin_at_once(
    sasl_common: CommonSettings, sasl_topic: str
) -> None:
    code, _, err, elapsed = _admin(
        wrong_password(sasl_common), sasl_topic, "summary", "--timeout", "60"
    )
    assert code == 2, err
    assert "refused the connection" in err and "Authentication failed" in err
    assert elapsed < REFUSAL_SECONDS
    assert "not-the-password" not in err


def test_a_wrong_password_keeps_the_producer_unready_and_logs_why(
    sasl_common: CommonSettings, sasl_topic: str, spawn: Spawn
) -> None:
    port = free_port()
    bad = wrong_password(sasl_common)
    _, log_path = spawn(
        "producer-service",
        {
            **kafka_env(bad, sasl_topic),
            "PRODUCER_BIND_HOST": "127.0.0.1",
            "PRODUCER_PORT": str(port),
            "PRODUCER_WORKERS": "1",
            "PRODUCER_ACK_TIMEOUT_MS": "2000",
        },
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: status_of(f"{url}/health") == 200, 30, "the producer to listen")
    assert status_of(f"{url}/ready") == 503
    wait_until(
        lambda: "SASL authentication error" in log_path.read_text(),
        REFUSAL_SECONDS,
        "the refused login in the producer's log",
    )
    # /ready names the refused login, not just a metadata timeout.
    ready = requests.get(f"{url}/ready", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["error"]["checks"] == {"kafka": "auth_failed"}
    assert bad.kafka_sasl_username not in ready.text
    # Nothing hangs: the request is answered within the acknowledgement timeout.
    started = time.monotonic()
    answer = requests.post(f"{url}/events/generate", json=EVENT, timeout=30)
    assert answer.status_code == 503
    assert time.monotonic() - started < 10
    assert bad.kafka_sasl_password not in log_path.read_text()


def test_a_wrong_password_is_named_by_the_read_api_and_the_dashboard(
    sasl_common: CommonSettings, sasl_topic: str, redis_prefix: str
) -> None:
    settings = ConsumerSettings(
        common=replace(wrong_password(sasl_common), kafka_topic=sasl_topic),
        consumer_group=f"{sasl_topic}-group",
        redis_prefix=redis_prefix,
    )
    store = RedisEventStore.from_url(sasl_common.redis_url, redis_prefix, 60)
    try:
        client = create_app(settings, store=store).test_client()
        started = time.monotonic()
        ready = client.get("/ready")
        assert time.monotonic() - started < REFUSAL_SECONDS
        assert ready.status_code == 503
        # By name only: the broker's own words (and the user name) go to the log.
        assert ready.get_json()["checks"]["kafka"] == "auth_failed"
        assert settings.common.kafka_sasl_username not in ready.get_data(as_text=True)
        dashboard = client.get("/dashboard/data")
        assert "refused the connection" in dashboard.get_data(as_text=True)
    finally:
        store.close()

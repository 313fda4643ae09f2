"""Kafka security settings: validated at start, built into every client from one place,
and never printed with their secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.worker import consumer_config
from producer_service.config import ProducerSettings
from producer_service.publisher import KafkaEventPublisher
from shared.config import CommonSettings, redacted
from shared.errors import ConfigError
from shared.kafka import AuthenticationWatch, KafkaAuthenticationFailed, client_config
from shared.urls import redact_url

PASSWORD = "s3cr3t-Pw"
SASL_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "broker:9094",
    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KAFKA_SASL_MECHANISM": "scram-sha-512",
    "KAFKA_SASL_USERNAME": "pipeline",
    "KAFKA_SASL_PASSWORD": PASSWORD,
}


def test_plaintext_by_default() -> None:
    common = CommonSettings.from_env({})
    assert client_config(common) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "plaintext",
    }


def test_sasl_settings_from_the_environment() -> None:
    common = CommonSettings.from_env(SASL_ENV)
    assert common.kafka_security_protocol == "SASL_SSL"
    assert common.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert client_config(common, {"acks": "all"}) == {
        "bootstrap.servers": "broker:9094",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pipeline",
        "sasl.password": PASSWORD,
        "acks": "all",
    }


def test_the_ca_file_is_passed_on(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": str(ca)}
    config = client_config(CommonSettings.from_env(env))
    assert config["security.protocol"] == "ssl"
    assert config["ssl.ca.location"] == str(ca)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD",
        ),
        ({**SASL_ENV, "KAFKA_SASL_PASSWORD": ""}, "needs KAFKA_SASL_PASSWORD"),
        ({**SASL_ENV, "KAFKA_SASL_USERNAME": " "}, "needs KAFKA_SASL_USERNAME"),
        ({**SASL_ENV, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM must be one of"),
        (
            {"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
        ),
        ({"KAFKA_SSL_CA_LOCATION": "/etc/hosts"}, "does not use TLS"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/nowhere/ca.pem"},
            "KAFKA_SSL_CA_LOCATION '/nowhere/ca.pem' is not a readable file",
        ),
        ({"REDIS_URL": "http://:pw@h:6379"}, "REDIS_URL must start with redis://"),
    ],
)
def test_bad_security_settings_stop_the_process(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        CommonSettings.from_env(env)
    # Both services read them.
    with pytest.raises(ConfigError):
        ConsumerSettings.from_env(env)
    with pytest.raises(ConfigError):
        ProducerSettings.from_env(env)


def test_a_bad_redis_url_is_reported_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        CommonSettings.from_env({"REDIS_URL": f"http://:{PASSWORD}@h:6379"})
    assert PASSWORD not in str(caught.value)


def test_every_client_gets_the_security_settings() -> None:
    env = {**SASL_ENV, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    consumer = consumer_config(ConsumerSettings.from_env(env))
    producer = KafkaEventPublisher(ProducerSettings.from_env(env)).kafka_config()
    for config in (consumer, producer):
        assert config["security.protocol"] == "sasl_plaintext"
        assert config["sasl.password"] == PASSWORD
    assert consumer["group.id"] == "user-activity-consumers"
    assert producer["acks"] == "all"


def test_a_role_may_not_set_the_connection() -> None:
    with pytest.raises(ValueError, match=r"bootstrap\.servers"):
        client_config(CommonSettings(), {"bootstrap.servers": "elsewhere:9092"})
    with pytest.raises(ValueError, match=r"security\.protocol"):
        client_config(CommonSettings(), {"security.protocol": "plaintext"})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://:{PASSWORD}@redis:6379/0", "redis://:***@redis:6379/0"),
        (f"rediss://app:{PASSWORD}@cache.example:6380/2", "rediss://app:***@cache.example:6380/2"),
        (f"redis://{PASSWORD}@redis:6379", "redis://:***@redis:6379"),
        (
            f"rediss://h:6380/0?ssl_cert_reqs=required&password={PASSWORD}",
            "rediss://h:6380/0?ssl_cert_reqs=required&password=***",
        ),
        (f"unix://:{PASSWORD}@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        # Unescaped / and # in a password: urllib would leave part of it in the path.
        ("redis://:pa/ss#w@rd@redis:6379/0", "redis://:***@redis:6379/0"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_settings_are_logged_and_printed_without_secrets() -> None:
    env = {**SASL_ENV, "REDIS_URL": f"rediss://app:{PASSWORD}@cache:6380/0"}
    for settings in (ConsumerSettings.from_env(env), ProducerSettings.from_env(env)):
        as_logged = json.dumps(redacted(settings))
        assert PASSWORD not in as_logged
        assert '"kafka_sasl_password": "***"' in as_logged
        assert '"kafka_sasl_username": "pipeline"' in as_logged
        assert PASSWORD not in repr(settings.common)
        assert "rediss://app:***@cache:6380/0" in repr(settings.common)


class FakeError:
    """The two methods of confluent_kafka.KafkaError that AuthenticationWatch reads."""

    def __init__(self, name: str, text: str) -> None:
        self._name, self._text = name, text

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return self._text


def test_the_watch_tells_a_refused_login_from_other_errors() -> None:
    seen: list[object] = []
    watch = AuthenticationWatch(then=seen.append)
    transport = FakeError("_TRANSPORT", "connection refused")
    watch(transport)
    assert watch.failure is None
    watch.raise_if_failed(CommonSettings())  # nothing to raise
    refused = FakeError("_AUTHENTICATION", "SASL authentication error: invalid credentials")
    watch(refused)
    assert seen == [transport, refused]
    common = CommonSettings.from_env(SASL_ENV)
    with pytest.raises(KafkaAuthenticationFailed) as caught:
        watch.raise_if_failed(common)
    message = str(caught.value)
    assert "invalid credentials" in message
    assert "broker:9094 (SASL_SSL/SCRAM-SHA-512 as 'pipeline')" in message
    assert PASSWORD not in message
    assert isinstance(caught.value, ConfigError)
    watch.clear()
    assert watch.failure is None

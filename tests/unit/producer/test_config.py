from __future__ import annotations

import pytest

from producer_service.config import ProducerSettings
from shared.config import CommonSettings, declared, redacted
from shared.errors import ConfigError


def test_defaults() -> None:
    s = ProducerSettings.from_env({})
    assert s.port == 8000
    assert s.ack_timeout == 5.0
    assert s.max_batch_events == 1000
    assert s.max_payload_bytes == 16384
    assert s.api_keys == ()
    assert s.event_types == ("LOGIN", "LOGOUT", "PRODUCT_VIEW")
    assert s.common.kafka_topic == "user-activity-events"
    assert s.compression == "lz4"
    assert s.worker_class == "gevent"
    assert s.log_events is False
    assert s.max_batch_bytes == s.max_batch_body_bytes == 4 * 1024 * 1024


def test_batch_body_limit_is_the_smaller_of_the_two_bounds() -> None:
    s = ProducerSettings.from_env({"PRODUCER_MAX_BATCH_EVENTS": "10"})
    assert s.max_batch_body_bytes == 10 * s.max_event_body_bytes
    s = ProducerSettings.from_env({"PRODUCER_MAX_BATCH_BYTES": "100000"})
    assert s.max_batch_body_bytes == 100_000


def test_from_env() -> None:
    s = ProducerSettings.from_env(
        {
            "PRODUCER_PORT": "9000",
            "PRODUCER_API_KEYS": " k1, k2 ,",
            "EVENT_TYPES": "A,B",
            "PRODUCER_ACK_TIMEOUT_MS": "250",
            "PRODUCER_COMPRESSION": "ZSTD",
            "KAFKA_TOPIC": "t",
            "PRODUCER_WORKER_CLASS": "GEVENT",
            "PRODUCER_LOG_EVENTS": "yes",
        }
    )
    assert (s.worker_class, s.log_events) == ("gevent", True)
    assert (s.port, s.api_keys, s.event_types) == (9000, ("k1", "k2"), ("A", "B"))
    assert (s.ack_timeout, s.compression, s.common.kafka_topic) == (0.25, "zstd", "t")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PRODUCER_PORT": "http"}, "PRODUCER_PORT"),
        ({"PRODUCER_PORT": "70000"}, "PRODUCER_PORT"),
        ({"PRODUCER_ACK_TIMEOUT_MS": "10"}, "PRODUCER_ACK_TIMEOUT_MS"),
        ({"PRODUCER_COMPRESSION": "brotli"}, "PRODUCER_COMPRESSION"),
        ({"PRODUCER_WORKERS": "0"}, "PRODUCER_WORKERS"),
        ({"PRODUCER_WORKER_CLASS": "eventlet"}, "PRODUCER_WORKER_CLASS"),
        ({"PRODUCER_LOG_EVENTS": "sometimes"}, "PRODUCER_LOG_EVENTS"),
        ({"EVENT_TYPES": "OK,not ok"}, "EVENT_TYPES"),
        ({"PRODUCER_LINGER_MS": "500", "PRODUCER_ACK_TIMEOUT_MS": "400"}, "PRODUCER_LINGER_MS"),
        ({"KAFKA_BOOTSTRAP_SERVERS": " "}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"PRODUCER_MAX_BATCH_BYTES": "36863"}, "PRODUCER_MAX_BATCH_BYTES"),
        ({"PRODUCER_MAX_BATCH_BYTES": "0"}, "PRODUCER_MAX_BATCH_BYTES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        ProducerSettings.from_env(env)


def test_api_keys_are_redacted() -> None:
    s = ProducerSettings.from_env({"PRODUCER_API_KEYS": "secret-key"})
    assert "secret-key" not in str(redacted(s))


def test_api_keys_are_not_in_repr() -> None:
    assert "secret-key" not in repr(ProducerSettings.from_env({"PRODUCER_API_KEYS": "secret-key"}))


# Every numeric setting, with the largest value accepted; one past it is refused by name.
MAXIMA = {
    "KAFKA_TOPIC_PARTITIONS": 10_000,
    "PRODUCER_PORT": 65535,
    "PRODUCER_WORKERS": 64,
    "PRODUCER_THREADS": 1024,
    "PRODUCER_ACK_TIMEOUT_MS": 300_000,
    "PRODUCER_FLUSH_TIMEOUT_MS": 300_000,
    "PRODUCER_LINGER_MS": 1000,
    "PRODUCER_MAX_BATCH_EVENTS": 100_000,
    "PRODUCER_MAX_BATCH_BYTES": 1 << 30,
    "PRODUCER_MAX_PAYLOAD_BYTES": 900_000,
    "TRACKING_MAX_BATCH_BYTES": 64 * 1024 * 1024,
    "TRACKING_MAX_MESSAGE_BYTES": 900_000,
}
# The batch body must fit one event at the payload limit (2 x payload + 4096).
COMPANIONS = {"PRODUCER_MAX_PAYLOAD_BYTES": {"PRODUCER_MAX_BATCH_BYTES": str(1 << 30)}}


@pytest.mark.parametrize(("name", "largest"), sorted(MAXIMA.items()))
def test_every_numeric_setting_has_a_maximum(name: str, largest: int) -> None:
    extra = COMPANIONS.get(name, {})
    ProducerSettings.from_env({name: str(largest), **extra})
    with pytest.raises(ConfigError, match=f"{name} must be <= "):
        ProducerSettings.from_env({name: str(largest + 1), **extra})


def test_every_numeric_setting_is_covered() -> None:
    numeric = {
        spec.env
        for cls in (ProducerSettings, CommonSettings)
        for f, spec in declared(cls)
        if type(f.default) in (int, float)
    }
    assert set(MAXIMA) == numeric

"""Settings: documented defaults, and bad values stop the process with a clear message."""

from __future__ import annotations

import pytest

from consumer_service.config import ConsumerSettings
from shared.errors import ConfigError


def test_defaults() -> None:
    s = ConsumerSettings.from_env({})
    assert s.consumer_group == "user-activity-consumers"
    assert s.port == 8001
    assert s.dedup_ttl_seconds == 604800
    assert s.redis_prefix == "ua"
    assert s.dlq_topic == "user-activity-events.dlq"
    assert s.common.kafka_topic == "user-activity-events"


def test_values_from_the_environment() -> None:
    s = ConsumerSettings.from_env(
        {
            "KAFKA_TOPIC": "t",
            "KAFKA_CONSUMER_GROUP": "g",
            "CONSUMER_BATCH_SIZE": "50",
            "CONSUMER_POISON_MAX_SHARE": "0.25",
            "CONSUMER_RETENTION_MAX_AGE_SECONDS": "3600",
        }
    )
    assert (s.common.kafka_topic, s.consumer_group, s.batch_size) == ("t", "g", 50)
    assert s.poison_max_share == 0.25
    assert s.retention_max_age_seconds == 3600
    assert s.dlq_topic == "t.dlq"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"CONSUMER_BATCH_SIZE": "0"}, "CONSUMER_BATCH_SIZE"),
        ({"CONSUMER_BATCH_SIZE": "many"}, "CONSUMER_BATCH_SIZE"),
        ({"CONSUMER_PORT": "70000"}, "CONSUMER_PORT"),
        ({"CONSUMER_POISON_MAX_SHARE": "1.5"}, "CONSUMER_POISON_MAX_SHARE"),
        (
            {"CONSUMER_BACKOFF_INITIAL_SECONDS": "5", "CONSUMER_BACKOFF_MAX_SECONDS": "1"},
            "CONSUMER_BACKOFF_MAX_SECONDS",
        ),
        (
            {"CONSUMER_SESSION_TIMEOUT_MS": "60000", "CONSUMER_MAX_POLL_INTERVAL_MS": "10000"},
            "CONSUMER_MAX_POLL_INTERVAL_MS",
        ),
        ({"CONSUMER_REDIS_PREFIX": " "}, "CONSUMER_REDIS_PREFIX"),
    ],
)
def test_bad_values_are_rejected_by_name(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        ConsumerSettings.from_env(env)


def test_settings_are_frozen() -> None:
    s = ConsumerSettings()
    with pytest.raises(AttributeError):
        s.batch_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), (" no ", False), ("0", False), ("False", False)],
)
def test_switches_take_true_false_1_0_yes_no(raw: str, expected: bool) -> None:
    s = ConsumerSettings.from_env(
        {"CONSUMER_API_ENABLED": raw, "CONSUMER_REQUIRE_REDIS_FSYNC": raw}
    )
    assert s.api_enabled is expected
    assert s.require_redis_fsync is expected


def test_switch_defaults() -> None:
    s = ConsumerSettings.from_env({"CONSUMER_API_ENABLED": ""})
    assert s.api_enabled is True
    assert s.require_redis_fsync is False


@pytest.mark.parametrize("name", ["CONSUMER_API_ENABLED", "CONSUMER_REQUIRE_REDIS_FSYNC"])
@pytest.mark.parametrize("raw", ["off", "on", "disabled", "2", "tru"])
def test_a_switch_that_is_not_a_boolean_is_rejected_by_name(name: str, raw: str) -> None:
    # "off" used to leave the API on without a word.
    with pytest.raises(ConfigError, match=name):
        ConsumerSettings.from_env({name: raw})

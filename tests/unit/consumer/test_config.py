"""Settings: documented defaults, and bad values stop the process with a clear message."""

from __future__ import annotations

import pytest

from consumer_service.config import ConsumerSettings, ReadApiSettings
from shared.config import CommonSettings, declared
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
        ({"CONSUMER_REDIS_MODE": "sharded"}, "CONSUMER_REDIS_MODE"),
        (
            {"CONSUMER_REDIS_WAIT_TIMEOUT_MS": "5000", "CONSUMER_REDIS_TIMEOUT_SECONDS": "5"},
            "CONSUMER_REDIS_WAIT_TIMEOUT_MS",
        ),
        ({"EVENT_TYPES": "LOGIN,new type"}, "EVENT_TYPES"),
        ({"EVENT_TYPES": "LOGIN," + "X" * 65}, "EVENT_TYPES"),
        ({"EVENT_TYPES": ",".join(f"T{i}" for i in range(1001))}, "EVENT_TYPES names 1001"),
    ],
)
def test_bad_values_are_rejected_by_name(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        ConsumerSettings.from_env(env)


def test_the_consumer_reads_the_event_types_the_producer_reads() -> None:
    assert ConsumerSettings.from_env({}).event_types == {"LOGIN", "LOGOUT", "PRODUCT_VIEW"}
    types = ",".join(f"T{i}" for i in range(1000))
    assert len(ConsumerSettings.from_env({"EVENT_TYPES": types}).event_types) == 1000
    assert ConsumerSettings.from_env({"EVENT_TYPES": " A , B.c:d-e "}).event_types == {
        "A",
        "B.c:d-e",
    }


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
        {"CONSUMER_API_ENABLED": raw, "CONSUMER_REQUIRE_DURABLE_REDIS": raw}
    )
    assert s.api_enabled is expected
    assert s.require_durable_redis is expected


def test_switch_defaults() -> None:
    s = ConsumerSettings.from_env({"CONSUMER_API_ENABLED": ""})
    assert s.api_enabled is True
    assert s.require_durable_redis is False


@pytest.mark.parametrize(
    "name",
    ["CONSUMER_API_ENABLED", "CONSUMER_REQUIRE_DURABLE_REDIS", "CONSUMER_REQUIRE_REDIS_FSYNC"],
)
@pytest.mark.parametrize("raw", ["off", "on", "disabled", "2", "tru"])
def test_a_switch_that_is_not_a_boolean_is_rejected_by_name(name: str, raw: str) -> None:
    # "off" used to leave the API on without a word.
    with pytest.raises(ConfigError, match=name):
        ConsumerSettings.from_env({name: raw})


@pytest.mark.parametrize("raw", ["true", "false"])
def test_the_old_name_of_the_durability_switch_still_works(raw: str) -> None:
    s = ConsumerSettings.from_env({"CONSUMER_REQUIRE_REDIS_FSYNC": raw})
    assert s.require_durable_redis is (raw == "true")
    both = {"CONSUMER_REQUIRE_REDIS_FSYNC": raw, "CONSUMER_REQUIRE_DURABLE_REDIS": raw}
    assert ConsumerSettings.from_env(both).require_durable_redis is (raw == "true")


def test_the_two_names_of_the_durability_switch_must_agree() -> None:
    with pytest.raises(ConfigError, match="CONSUMER_REQUIRE_REDIS_FSYNC"):
        ConsumerSettings.from_env(
            {"CONSUMER_REQUIRE_REDIS_FSYNC": "true", "CONSUMER_REQUIRE_DURABLE_REDIS": "false"}
        )


TEN_YEARS = 10 * 365 * 24 * 3600

# Every numeric setting, with the largest value accepted. One past it is refused by name,
# so a typo (an extra zero, milliseconds for seconds) stops the process at start instead
# of surfacing later, e.g. as an expire time Redis refuses inside the store script.
MAXIMA = {
    "KAFKA_TOPIC_PARTITIONS": 10_000,
    "CONSUMER_PORT": 65535,
    "CONSUMER_BATCH_SIZE": 10_000,
    "CONSUMER_POLL_TIMEOUT_SECONDS": 10.0,
    "CONSUMER_SESSION_TIMEOUT_MS": 1_800_000,
    "CONSUMER_MAX_POLL_INTERVAL_MS": 86_400_000,
    "CONSUMER_MAX_MESSAGE_BYTES": 64 * 1024 * 1024,
    "CONSUMER_FETCH_QUEUE_KB": 2_097_151,
    "CONSUMER_STORES_IN_FLIGHT": 2,
    "CONSUMER_DEDUP_TTL_SECONDS": TEN_YEARS,
    "CONSUMER_RETENTION_MAX_EVENTS": 1_000_000_000,
    "CONSUMER_RETENTION_MAX_AGE_SECONDS": TEN_YEARS,
    "CONSUMER_ERASURE_TTL_SECONDS": TEN_YEARS,
    "CONSUMER_REDIS_TIMEOUT_SECONDS": 60.0,
    "CONSUMER_REDIS_WAIT_REPLICAS": 16,
    "CONSUMER_REDIS_WAIT_TIMEOUT_MS": 30_000,
    "CONSUMER_POISON_WINDOW": 1_000_000,
    "CONSUMER_POISON_MAX_SHARE": 1.0,
    "CONSUMER_BACKOFF_INITIAL_SECONDS": 60.0,
    "CONSUMER_BACKOFF_MAX_SECONDS": 600.0,
    "CONSUMER_DLQ_FLUSH_TIMEOUT_SECONDS": 120.0,
    "CONSUMER_API_WORKERS": 64,
    "CONSUMER_STALL_SECONDS": 86_400.0,
    "CONSUMER_READY_CACHE_SECONDS": 60.0,
    "CONSUMER_MAX_SCAN_PER_PAGE": 1_000_000,
    "CONSUMER_MAX_PAGE_BYTES": 256 * 1024 * 1024,
}
# Cross-field rules that the largest value of one setting would break on its own.
COMPANIONS = {
    "CONSUMER_SESSION_TIMEOUT_MS": {"CONSUMER_MAX_POLL_INTERVAL_MS": "1800000"},
    "CONSUMER_BATCH_SIZE": {"CONSUMER_MAX_MESSAGE_BYTES": "16384"},
    "CONSUMER_MAX_MESSAGE_BYTES": {"CONSUMER_BATCH_SIZE": "4"},
    "CONSUMER_BACKOFF_INITIAL_SECONDS": {"CONSUMER_BACKOFF_MAX_SECONDS": "60"},
    "CONSUMER_REDIS_WAIT_TIMEOUT_MS": {"CONSUMER_REDIS_TIMEOUT_SECONDS": "60"},
}


@pytest.mark.parametrize(("name", "largest"), sorted(MAXIMA.items()))
def test_every_numeric_setting_has_a_maximum(name: str, largest: float) -> None:
    extra = COMPANIONS.get(name, {})
    ConsumerSettings.from_env({name: str(largest), **extra})
    too_big = largest + 1 if isinstance(largest, int) else largest * 1.01
    with pytest.raises(ConfigError, match=f"{name} must be <= "):
        ConsumerSettings.from_env({name: str(too_big), **extra})


def test_every_numeric_setting_is_covered() -> None:
    numeric = {
        spec.env
        for cls in (ConsumerSettings, ReadApiSettings, CommonSettings)
        for f, spec in declared(cls)
        if type(f.default) in (int, float)
    }
    assert set(MAXIMA) == numeric


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
def test_a_float_setting_must_be_a_finite_number(raw: str) -> None:
    with pytest.raises(ConfigError, match="CONSUMER_POLL_TIMEOUT_SECONDS"):
        ConsumerSettings.from_env({"CONSUMER_POLL_TIMEOUT_SECONDS": raw})


def test_a_batch_must_fit_one_redis_call() -> None:
    # 2,000 records of up to 256 KiB would be a 500 MiB script call: refused at start,
    # instead of a call Redis refuses on every retry.
    with pytest.raises(ConfigError, match="CONSUMER_BATCH_SIZE x CONSUMER_MAX_MESSAGE_BYTES"):
        ConsumerSettings.from_env(
            {"CONSUMER_BATCH_SIZE": "2000", "CONSUMER_MAX_MESSAGE_BYTES": str(256 * 1024)}
        )
    ConsumerSettings.from_env(
        {"CONSUMER_BATCH_SIZE": "1000", "CONSUMER_MAX_MESSAGE_BYTES": str(256 * 1024)}
    )


def test_fetch_queue_cap_reaches_librdkafka() -> None:
    from consumer_service.pipeline.worker import consumer_config

    assert ConsumerSettings.from_env({}).fetch_queue_kb == 65536
    config = consumer_config(ConsumerSettings.from_env({"CONSUMER_FETCH_QUEUE_KB": "2048"}))
    assert config["queued.max.messages.kbytes"] == 2048
    with pytest.raises(ConfigError, match="CONSUMER_FETCH_QUEUE_KB"):
        ConsumerSettings.from_env({"CONSUMER_FETCH_QUEUE_KB": "0"})

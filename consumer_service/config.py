"""The consumer's settings, read from the environment once at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from shared.config import CommonSettings, Environ, env_bool, env_float, env_int, env_str
from shared.errors import ConfigError


@dataclass(frozen=True)
class ConsumerSettings:
    """Everything one consumer replica needs. Defaults are the documented ones
    (docs/consumer.md has the table); `from_env` validates and fails fast."""

    common: CommonSettings = field(default_factory=CommonSettings)
    consumer_group: str = "user-activity-consumers"
    port: int = 8001
    # Worker
    batch_size: int = 500
    # consume() returns when the batch is full OR this expires: at low traffic it is the
    # latency an event waits for company, so it stays short.
    poll_timeout_seconds: float = 0.1
    # How long a replica that died without leaving the group keeps its partitions (and how
    # long a restarted group waits for it). The worker heartbeats from librdkafka's own
    # thread, so a short timeout costs nothing; the broker allows 6 s at least.
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    max_message_bytes: int = 64 * 1024
    # Redis storage
    redis_prefix: str = "ua"
    dedup_ttl_seconds: int = 7 * 24 * 3600
    retention_max_events: int = 1_000_000
    retention_max_age_seconds: int = 0
    redis_timeout_seconds: float = 5.0
    # Refuse to start unless Redis reports appendonly=yes and appendfsync=always, i.e.
    # unless "Redis answered" really means "on disk" (see docs/consumer.md).
    require_redis_fsync: bool = False
    # Poison guard: stop when more than this share of the last `poison_window` records
    # were poison.
    poison_window: int = 200
    poison_max_share: float = 0.5
    # Retry of a batch while Redis or the DLQ is unavailable
    backoff_initial_seconds: float = 0.2
    backoff_max_seconds: float = 10.0
    dlq_flush_timeout_seconds: float = 10.0
    # Read API
    api_enabled: bool = True
    api_workers: int = 2
    stall_seconds: float = 60.0
    max_scan_per_page: int = 5000

    @property
    def dlq_topic(self) -> str:
        return self.common.dlq_topic

    @classmethod
    def from_env(cls, env: Environ | None = None) -> ConsumerSettings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            common=CommonSettings.from_env(env),
            consumer_group=env_str(env, "KAFKA_CONSUMER_GROUP", d.consumer_group),
            port=env_int(env, "CONSUMER_PORT", d.port, minimum=1, maximum=65535),
            batch_size=env_int(
                env, "CONSUMER_BATCH_SIZE", d.batch_size, minimum=1, maximum=100_000
            ),
            poll_timeout_seconds=env_float(
                env, "CONSUMER_POLL_TIMEOUT_SECONDS", d.poll_timeout_seconds, minimum=0.01
            ),
            session_timeout_ms=env_int(
                env, "CONSUMER_SESSION_TIMEOUT_MS", d.session_timeout_ms, minimum=1000
            ),
            max_poll_interval_ms=env_int(
                env, "CONSUMER_MAX_POLL_INTERVAL_MS", d.max_poll_interval_ms, minimum=1000
            ),
            max_message_bytes=env_int(
                env, "CONSUMER_MAX_MESSAGE_BYTES", d.max_message_bytes, minimum=256
            ),
            redis_prefix=env_str(env, "CONSUMER_REDIS_PREFIX", d.redis_prefix),
            dedup_ttl_seconds=env_int(
                env, "CONSUMER_DEDUP_TTL_SECONDS", d.dedup_ttl_seconds, minimum=1
            ),
            retention_max_events=env_int(
                env, "CONSUMER_RETENTION_MAX_EVENTS", d.retention_max_events, minimum=0
            ),
            retention_max_age_seconds=env_int(
                env, "CONSUMER_RETENTION_MAX_AGE_SECONDS", d.retention_max_age_seconds, minimum=0
            ),
            redis_timeout_seconds=env_float(
                env, "CONSUMER_REDIS_TIMEOUT_SECONDS", d.redis_timeout_seconds, minimum=0.1
            ),
            require_redis_fsync=env_bool(
                env, "CONSUMER_REQUIRE_REDIS_FSYNC", d.require_redis_fsync
            ),
            poison_window=env_int(env, "CONSUMER_POISON_WINDOW", d.poison_window, minimum=1),
            poison_max_share=env_float(
                env, "CONSUMER_POISON_MAX_SHARE", d.poison_max_share, minimum=0.0
            ),
            backoff_initial_seconds=env_float(
                env, "CONSUMER_BACKOFF_INITIAL_SECONDS", d.backoff_initial_seconds, minimum=0.01
            ),
            backoff_max_seconds=env_float(
                env, "CONSUMER_BACKOFF_MAX_SECONDS", d.backoff_max_seconds, minimum=0.01
            ),
            dlq_flush_timeout_seconds=env_float(
                env, "CONSUMER_DLQ_FLUSH_TIMEOUT_SECONDS", d.dlq_flush_timeout_seconds, minimum=0.1
            ),
            api_enabled=env_bool(env, "CONSUMER_API_ENABLED", d.api_enabled),
            api_workers=env_int(env, "CONSUMER_API_WORKERS", d.api_workers, minimum=1),
            stall_seconds=env_float(env, "CONSUMER_STALL_SECONDS", d.stall_seconds, minimum=1.0),
            max_scan_per_page=env_int(
                env, "CONSUMER_MAX_SCAN_PER_PAGE", d.max_scan_per_page, minimum=1
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-field checks; raises ConfigError."""
        if self.poison_max_share > 1.0:
            raise ConfigError("CONSUMER_POISON_MAX_SHARE must be <= 1")
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ConfigError(
                "CONSUMER_BACKOFF_MAX_SECONDS must be >= CONSUMER_BACKOFF_INITIAL_SECONDS"
            )
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ConfigError(
                "CONSUMER_MAX_POLL_INTERVAL_MS must be >= CONSUMER_SESSION_TIMEOUT_MS"
            )
        # The worker keeps polling while it backs off, but a single Redis call may block
        # for redis_timeout; it must stay well inside the poll interval.
        if self.redis_timeout_seconds * 1000 * 2 >= self.max_poll_interval_ms:
            raise ConfigError(
                "CONSUMER_REDIS_TIMEOUT_SECONDS must be less than half the max poll interval"
            )

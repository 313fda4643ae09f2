"""The consumer's settings, read from the environment once at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from shared.config import CommonSettings, Environ, env_bool, env_float, env_int, env_str
from shared.errors import ConfigError

# Ten years. The longest TTL or age a setting may ask for: far beyond any real retention,
# and far below what Redis refuses as an expire time (or what its Lua numbers can carry
# as an integer), so an expire inside the store script never fails on a setting.
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600

REQUIRE_DURABLE_REDIS = "CONSUMER_REQUIRE_DURABLE_REDIS"
REQUIRE_DURABLE_REDIS_OLD_NAME = "CONSUMER_REQUIRE_REDIS_FSYNC"


def _durable_redis_switch(env: Environ, default: bool) -> bool:
    """The switch under its name or its first one; both set must agree, so a deployment
    that sets one in a base file and the other in an override is not silently ambiguous."""
    new = env_bool(env, REQUIRE_DURABLE_REDIS, default)
    old = env_bool(env, REQUIRE_DURABLE_REDIS_OLD_NAME, default)
    set_new = env.get(REQUIRE_DURABLE_REDIS, "").strip() != ""
    set_old = env.get(REQUIRE_DURABLE_REDIS_OLD_NAME, "").strip() != ""
    if set_new and set_old and new != old:
        raise ConfigError(
            f"{REQUIRE_DURABLE_REDIS} and {REQUIRE_DURABLE_REDIS_OLD_NAME} (its old name) "
            "disagree; set only the first"
        )
    return new if set_new else old


REDIS_MODES = ("auto", "single", "cluster")


def _redis_mode(env: Environ, default: str) -> str:
    mode = env_str(env, "CONSUMER_REDIS_MODE", default).strip().lower()
    if mode not in REDIS_MODES:
        raise ConfigError(f"CONSUMER_REDIS_MODE must be one of {', '.join(REDIS_MODES)}")
    return mode


# A batch is one Redis script whose retention step evicts up to ~2 events per event
# stored: 10,000 keeps one call to tens of milliseconds of Redis time.
MAX_BATCH_SIZE = 10_000
MAX_BATCH_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ConsumerSettings:
    """Everything one consumer replica needs. Defaults are the documented ones
    (docs/consumer.md has the table); `from_env` validates and fails fast."""

    common: CommonSettings = field(default_factory=CommonSettings)
    consumer_group: str = "user-activity-consumers"
    port: int = 8001
    # Worker
    # Most records per batch (one Lua script, one commit). The worker waits only for the
    # first record of a batch and takes the rest from what is already fetched, so a
    # bigger batch adds no latency; it only bounds the work per script.
    batch_size: int = 500
    # The longest wait for the first record of a batch: how often an idle worker comes
    # back to heartbeat and check for a stop. Not added to any event's latency.
    poll_timeout_seconds: float = 0.1
    # One INFO line per processed event (eventId, userId, eventType), as the replaced
    # service wrote. Off by default: at tens of thousands of events per second it costs
    # more CPU than storing them (docs/performance.md).
    log_events: bool = False
    # Fetch and decide the next batch while Redis stores this one; stores and commits
    # stay in batch order. Off runs one batch at a time, as before (docs/consumer.md,
    # "The pipeline").
    pipeline: bool = True
    # With the pipeline, how many store scripts may be on their way at once: with 2 the
    # next batch is sent while Redis still runs the one before, and the script writes
    # nothing until that one is stored. A Redis Cluster store takes 1 whatever is set.
    stores_in_flight: int = 2
    # How long a replica that died without leaving the group keeps its partitions (and how
    # long a restarted group waits for it). The worker heartbeats from librdkafka's own
    # thread, so a short timeout costs nothing; the broker allows 6 s at least.
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    max_message_bytes: int = 64 * 1024
    # librdkafka's prefetch queue in bytes (queued.max.messages.kbytes). The default is
    # librdkafka's; the record-count bound of shared/kafka.py's CONSUMER_FETCH_DEFAULTS
    # (5,000 records) is what keeps the worker's RSS flat.
    fetch_queue_kb: int = 65536
    # Redis storage
    redis_prefix: str = "ua"
    dedup_ttl_seconds: int = 7 * 24 * 3600
    retention_max_events: int = 1_000_000
    retention_max_age_seconds: int = 0
    redis_timeout_seconds: float = 5.0
    # Which store: "auto" asks REDIS_URL's node (INFO cluster), "single" or "cluster" say
    # so (docs/scaling.md).
    redis_mode: str = "auto"
    # Cluster store: a batch's offsets are committed only once this many replicas of every
    # node written acknowledged the writes (WAIT); 0 = do not wait (docs/scaling.md says
    # what each choice protects against).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    # Refuse to start unless Redis reports appendonly=yes, appendfsync=always and
    # maxmemory-policy=noeviction, i.e. unless "Redis answered" really means "on disk, and
    # kept" (see docs/consumer.md). Read from CONSUMER_REQUIRE_DURABLE_REDIS, or from its
    # first name CONSUMER_REQUIRE_REDIS_FSYNC (from before the eviction check).
    require_durable_redis: bool = False
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
                env, "CONSUMER_BATCH_SIZE", d.batch_size, minimum=1, maximum=MAX_BATCH_SIZE
            ),
            poll_timeout_seconds=env_float(
                env,
                "CONSUMER_POLL_TIMEOUT_SECONDS",
                d.poll_timeout_seconds,
                minimum=0.01,
                maximum=10.0,
            ),
            log_events=env_bool(env, "CONSUMER_LOG_EVENTS", d.log_events),
            pipeline=env_bool(env, "CONSUMER_PIPELINE", d.pipeline),
            stores_in_flight=env_int(
                env, "CONSUMER_STORES_IN_FLIGHT", d.stores_in_flight, minimum=1, maximum=2
            ),
            session_timeout_ms=env_int(
                env,
                "CONSUMER_SESSION_TIMEOUT_MS",
                d.session_timeout_ms,
                minimum=1000,
                maximum=1_800_000,  # the broker's default group.max.session.timeout.ms
            ),
            max_poll_interval_ms=env_int(
                env,
                "CONSUMER_MAX_POLL_INTERVAL_MS",
                d.max_poll_interval_ms,
                minimum=1000,
                maximum=86_400_000,  # librdkafka's own limit
            ),
            max_message_bytes=env_int(
                env,
                "CONSUMER_MAX_MESSAGE_BYTES",
                d.max_message_bytes,
                minimum=256,
                maximum=64 * 1024 * 1024,
            ),
            fetch_queue_kb=env_int(
                env,
                "CONSUMER_FETCH_QUEUE_KB",
                d.fetch_queue_kb,
                minimum=1,
                maximum=2_097_151,  # librdkafka's own limit
            ),
            redis_prefix=env_str(env, "CONSUMER_REDIS_PREFIX", d.redis_prefix),
            dedup_ttl_seconds=env_int(
                env,
                "CONSUMER_DEDUP_TTL_SECONDS",
                d.dedup_ttl_seconds,
                minimum=1,
                maximum=MAX_TTL_SECONDS,
            ),
            retention_max_events=env_int(
                env,
                "CONSUMER_RETENTION_MAX_EVENTS",
                d.retention_max_events,
                minimum=0,
                maximum=1_000_000_000,  # about 1 TB of Redis at ~1 KB per event
            ),
            retention_max_age_seconds=env_int(
                env,
                "CONSUMER_RETENTION_MAX_AGE_SECONDS",
                d.retention_max_age_seconds,
                minimum=0,
                maximum=MAX_TTL_SECONDS,
            ),
            redis_timeout_seconds=env_float(
                env,
                "CONSUMER_REDIS_TIMEOUT_SECONDS",
                d.redis_timeout_seconds,
                minimum=0.1,
                maximum=60.0,
            ),
            redis_mode=_redis_mode(env, d.redis_mode),
            redis_wait_replicas=env_int(
                env, "CONSUMER_REDIS_WAIT_REPLICAS", d.redis_wait_replicas, minimum=0, maximum=16
            ),
            redis_wait_timeout_ms=env_int(
                env,
                "CONSUMER_REDIS_WAIT_TIMEOUT_MS",
                d.redis_wait_timeout_ms,
                minimum=1,
                maximum=30_000,
            ),
            require_durable_redis=_durable_redis_switch(env, d.require_durable_redis),
            poison_window=env_int(
                env, "CONSUMER_POISON_WINDOW", d.poison_window, minimum=1, maximum=1_000_000
            ),
            poison_max_share=env_float(
                env, "CONSUMER_POISON_MAX_SHARE", d.poison_max_share, minimum=0.0, maximum=1.0
            ),
            backoff_initial_seconds=env_float(
                env,
                "CONSUMER_BACKOFF_INITIAL_SECONDS",
                d.backoff_initial_seconds,
                minimum=0.01,
                maximum=60.0,
            ),
            backoff_max_seconds=env_float(
                env,
                "CONSUMER_BACKOFF_MAX_SECONDS",
                d.backoff_max_seconds,
                minimum=0.01,
                maximum=600.0,
            ),
            dlq_flush_timeout_seconds=env_float(
                env,
                "CONSUMER_DLQ_FLUSH_TIMEOUT_SECONDS",
                d.dlq_flush_timeout_seconds,
                minimum=0.1,
                maximum=120.0,
            ),
            api_enabled=env_bool(env, "CONSUMER_API_ENABLED", d.api_enabled),
            api_workers=env_int(env, "CONSUMER_API_WORKERS", d.api_workers, minimum=1, maximum=64),
            stall_seconds=env_float(
                env, "CONSUMER_STALL_SECONDS", d.stall_seconds, minimum=1.0, maximum=86_400.0
            ),
            max_scan_per_page=env_int(
                env,
                "CONSUMER_MAX_SCAN_PER_PAGE",
                d.max_scan_per_page,
                minimum=1,
                maximum=1_000_000,
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
        # One batch is one Redis script call: its arguments must stay far below Redis's
        # 1 GiB query buffer, or every attempt fails and the worker retries forever.
        if self.batch_size * self.max_message_bytes > MAX_BATCH_BYTES:
            raise ConfigError(
                f"CONSUMER_BATCH_SIZE x CONSUMER_MAX_MESSAGE_BYTES must be at most "
                f"{MAX_BATCH_BYTES} ({MAX_BATCH_BYTES // 2**20} MiB, one Redis call); it is "
                f"{self.batch_size * self.max_message_bytes}"
            )
        # The worker keeps polling while it backs off, but a single Redis call may block
        # for redis_timeout; it must stay well inside the poll interval.
        if self.redis_timeout_seconds * 1000 * 2 >= self.max_poll_interval_ms:
            raise ConfigError(
                "CONSUMER_REDIS_TIMEOUT_SECONDS must be less than half the max poll interval"
            )
        # WAIT blocks the connection for up to its timeout: the socket must outlast it.
        if self.redis_wait_timeout_ms >= self.redis_timeout_seconds * 1000:
            raise ConfigError(
                "CONSUMER_REDIS_WAIT_TIMEOUT_MS must be less than CONSUMER_REDIS_TIMEOUT_SECONDS"
            )

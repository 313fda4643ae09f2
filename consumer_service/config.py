"""The consumer's settings, read from the environment once at start.

Each field is declared once with its variable, default, bounds and doc (`setting`);
docs/configuration.md is generated from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.auth import ERASE, READ, ApiKey, AuthSettings, parse_api_keys
from shared.config import (
    CommonSettings,
    EncryptionSettings,
    Environ,
    check_choices,
    read_settings,
    setting,
)
from shared.errors import ConfigError
from shared.event_rules import EventTypes
from shared.urls import check_bind_host

# Ten years. The longest TTL or age a setting may ask for: far beyond any real retention,
# and far below what Redis refuses as an expire time (or what its Lua numbers can carry
# as an integer), so an expire inside the store script never fails on a setting.
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600

REDIS_MODES = ("auto", "single", "cluster")

# A batch is one Redis script whose retention step evicts up to ~2 events per event
# stored: 10,000 keeps one call to tens of milliseconds of Redis time.
MAX_BATCH_SIZE = 10_000
MAX_BATCH_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ReadApiSettings:
    """The read API's processes and its limits per request (`ConsumerSettings.api`)."""

    bind_host: str = setting(
        "0.0.0.0",
        "CONSUMER_BIND_HOST",
        "the read API's listen address: an IP address (`0.0.0.0` all IPv4 interfaces, `::` "
        "all IPv6) or a host name",
        check=check_bind_host,
    )
    workers: int = setting(
        2,
        "CONSUMER_API_WORKERS",
        "gunicorn worker processes of the read API (4 threads each)",
        lo=1,
        hi=64,
    )
    stall_seconds: float = setting(
        60.0,
        "CONSUMER_STALL_SECONDS",
        "`/ready` fails when the worker's heartbeat is older than this",
        lo=1.0,
        hi=86_400.0,
    )
    # Each answer costs a Kafka metadata request (up to 1.5 s) and a Redis PING: reused,
    # a crowd of pollers costs what one does.
    ready_cache_seconds: float = setting(
        1.0,
        "CONSUMER_READY_CACHE_SECONDS",
        "how long each API process reuses its last `/ready` answer; requests that arrive "
        "while Redis, Kafka and the worker are checked share that check; 0: only those",
        lo=0.0,
        hi=60.0,
    )
    max_scan_per_page: int = setting(
        5000,
        "CONSUMER_MAX_SCAN_PER_PAGE",
        "index entries one page may walk, and list from the time index (per partition)",
        lo=1,
        hi=1_000_000,
    )
    max_page_bytes: int = setting(
        1024 * 1024,
        "CONSUMER_MAX_PAGE_BYTES",
        "a page ends after the event that brings its stored events to this many bytes",
        lo=1024,
        hi=256 * 1024 * 1024,
    )


@dataclass(frozen=True)
class ConsumerSettings:
    """Everything one consumer replica needs. `from_env` validates and fails fast;
    `validate` holds the rules that tie several settings together."""

    common: CommonSettings = field(default_factory=CommonSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)
    api: ReadApiSettings = field(default_factory=ReadApiSettings)
    consumer_group: str = setting(
        "user-activity-consumers",
        "KAFKA_CONSUMER_GROUP",
        "consumer group id, shared by all replicas",
    )
    port: int = setting(8001, "CONSUMER_PORT", "read API port", lo=1, hi=65535)
    # Worker. The worker waits only for the first record of a batch and takes the rest
    # from what is already fetched, so a bigger batch adds no latency.
    batch_size: int = setting(
        500,
        "CONSUMER_BATCH_SIZE",
        "most records per batch, i.e. per Redis script and per commit; batch size x "
        "`CONSUMER_MAX_MESSAGE_BYTES` at most 256 MiB (one Redis call)",
        lo=1,
        hi=MAX_BATCH_SIZE,
    )
    poll_timeout_seconds: float = setting(
        0.1,
        "CONSUMER_POLL_TIMEOUT_SECONDS",
        "longest wait for the first record of a batch: an idle worker's heartbeat period, "
        "not added to any event's latency",
        lo=0.01,
        hi=10.0,
    )
    # Off by default: at tens of thousands of events per second the lines cost more CPU
    # than storing the events (docs/performance.md).
    log_events: bool = setting(
        False,
        "CONSUMER_LOG_EVENTS",
        "one INFO line per processed event (`event_id`, `user_id`, `event_type`, "
        "`partition`, `offset`), as the replaced service logged",
    )
    pipeline: bool = setting(
        True,
        "CONSUMER_PIPELINE",
        "fetch and decide the next batch while Redis stores this one, committing in "
        'order (docs/consumer.md, "The pipeline"); `false`: one batch at a time',
    )
    # With 2 the next batch is sent while Redis still runs the one before, and the script
    # writes nothing until that one is stored.
    stores_in_flight: int = setting(
        2,
        "CONSUMER_STORES_IN_FLIGHT",
        "with the pipeline, how many store scripts may be on their way to Redis at once; "
        "a Redis Cluster store always takes 1",
        lo=1,
        hi=2,
    )
    # The worker heartbeats from librdkafka's own thread, so a short timeout costs
    # nothing; the broker allows 6 s at least.
    session_timeout_ms: int = setting(
        10_000,
        "CONSUMER_SESSION_TIMEOUT_MS",
        "how long a replica that died without leaving the group keeps its partitions; "
        "a clean stop hands them over at once",
        lo=1000,
        hi=1_800_000,  # the broker's default group.max.session.timeout.ms
    )
    max_poll_interval_ms: int = setting(
        300_000,
        "CONSUMER_MAX_POLL_INTERVAL_MS",
        "Kafka's `max.poll.interval.ms`; at least `CONSUMER_SESSION_TIMEOUT_MS`",
        lo=1000,
        hi=86_400_000,  # librdkafka's own limit
    )
    max_message_bytes: int = setting(
        64 * 1024,
        "CONSUMER_MAX_MESSAGE_BYTES",
        "larger record values are dead-lettered as `too_large`",
        lo=256,
        hi=64 * 1024 * 1024,
    )
    # The record-count bound of shared/kafka.py's CONSUMER_FETCH_DEFAULTS (5,000 records)
    # is what keeps the worker's RSS flat; this byte cap is librdkafka's default.
    fetch_queue_kb: int = setting(
        65536,
        "CONSUMER_FETCH_QUEUE_KB",
        "librdkafka's `queued.max.messages.kbytes`: a byte cap on the records fetched "
        "ahead of the worker (a count of about 5,000 records usually binds first)",
        lo=1,
        hi=2_097_151,  # librdkafka's own limit
    )
    # Redis storage
    redis_prefix: str = setting(
        "ua", "CONSUMER_REDIS_PREFIX", "prefix of every Redis key the consumer writes"
    )
    dedup_ttl_seconds: int = setting(
        7 * 24 * 3600,
        "CONSUMER_DEDUP_TTL_SECONDS",
        "the window in which a duplicate `eventId` is recognised",
        lo=1,
        hi=MAX_TTL_SECONDS,
        default_note="7 days",
    )
    retention_max_events: int = setting(
        1_000_000,
        "CONSUMER_RETENTION_MAX_EVENTS",
        "most events kept in Redis, oldest trimmed first (each batch evicts at most "
        "1,000 + 2 x its stored events); 0: unbounded",
        lo=0,
        hi=1_000_000_000,  # about 1 TB of Redis at ~1 KB per event
    )
    retention_max_age_seconds: int = setting(
        0,
        "CONSUMER_RETENTION_MAX_AGE_SECONDS",
        "events expire this long after processing; 0: never",
        lo=0,
        hi=MAX_TTL_SECONDS,
    )
    # The record holds a userId, itself personal data: kept only as long as a copy of an
    # erased event may still be replayed (docs/personal-data.md).
    erasure_ttl_seconds: int = setting(
        30 * 24 * 3600,
        "CONSUMER_ERASURE_TTL_SECONDS",
        "how long an erasure record keeps a user's events from before the erasure out of "
        "the store; at least 2 x the topic's retention + the dead-letter topic's",
        lo=3600,
        hi=MAX_TTL_SECONDS,
        default_note="30 days",
    )
    redis_timeout_seconds: float = setting(
        5.0,
        "CONSUMER_REDIS_TIMEOUT_SECONDS",
        "Redis socket timeout; less than half of `CONSUMER_MAX_POLL_INTERVAL_MS`",
        lo=0.1,
        hi=60.0,
    )
    redis_mode: str = setting(
        "auto",
        "CONSUMER_REDIS_MODE",
        "which store: `auto` asks `REDIS_URL`'s node (INFO cluster); `single` or "
        "`cluster` say so (docs/scaling.md)",
        choices=REDIS_MODES,
        case="lower",
    )
    redis_wait_replicas: int = setting(
        0,
        "CONSUMER_REDIS_WAIT_REPLICAS",
        "Redis Cluster: commit a batch's offsets only once this many replicas of every "
        "node written acknowledged the writes (WAIT); 0: do not wait (docs/scaling.md)",
        lo=0,
        hi=16,
    )
    # WAIT blocks the connection for up to its timeout: the socket must outlast it.
    redis_wait_timeout_ms: int = setting(
        1000,
        "CONSUMER_REDIS_WAIT_TIMEOUT_MS",
        "longest WAIT for those replicas; less than `CONSUMER_REDIS_TIMEOUT_SECONDS`",
        lo=1,
        hi=30_000,
    )
    # "Redis answered" then really means "on disk, and kept" (docs/consumer.md).
    require_durable_redis: bool = setting(
        False,
        "CONSUMER_REQUIRE_DURABLE_REDIS",
        "refuse to start (exit 2) unless Redis confirms `appendonly yes`, `appendfsync "
        "always` and `maxmemory-policy noeviction`; when `false` a Redis without them is "
        "logged as an error at start",
        old_env="CONSUMER_REQUIRE_REDIS_FSYNC",
    )
    # Poison guard
    poison_window: int = setting(
        200,
        "CONSUMER_POISON_WINDOW",
        "records in the poison guard's sliding window",
        lo=1,
        hi=1_000_000,
    )
    poison_max_share: float = setting(
        0.5,
        "CONSUMER_POISON_MAX_SHARE",
        "the worker stops (exit 3) when more than this share of the window was poison; "
        "1 never stops it",
        lo=0.0,
        hi=1.0,
    )
    # Retry of a batch while Redis or the DLQ is unavailable
    backoff_initial_seconds: float = setting(
        0.2,
        "CONSUMER_BACKOFF_INITIAL_SECONDS",
        "first retry delay while Redis or the DLQ is unavailable",
        lo=0.01,
        hi=60.0,
    )
    backoff_max_seconds: float = setting(
        10.0,
        "CONSUMER_BACKOFF_MAX_SECONDS",
        "retry delay cap; at least `CONSUMER_BACKOFF_INITIAL_SECONDS`",
        lo=0.01,
        hi=600.0,
    )
    dlq_flush_timeout_seconds: float = setting(
        10.0,
        "CONSUMER_DLQ_FLUSH_TIMEOUT_SECONDS",
        "how long to wait for the DLQ's acknowledgements before retrying",
        lo=0.1,
        hi=120.0,
    )
    # Read API
    api_enabled: bool = setting(
        True, "CONSUMER_API_ENABLED", "`false` runs the worker without the read API"
    )
    api_keys: tuple[str, ...] = setting(
        (),
        "CONSUMER_API_KEYS",
        "API keys the read API accepts in `X-API-Key` (or as a bearer token), "
        "comma-separated; an item `KEY` grants `events:read` and `events:erase`, "
        "`KEY SCOPE...` only the scopes listed (docs/security.md); empty, and no JWT key: "
        "no authentication",
        repr=False,  # secrets: never printed
    )

    def __post_init__(self) -> None:
        check_choices(self)
        self.parsed_api_keys()

    def parsed_api_keys(self) -> tuple[ApiKey, ...]:
        """CONSUMER_API_KEYS with the scopes of each key; ConfigError for a bad item."""
        return parse_api_keys("CONSUMER_API_KEYS", self.api_keys, (READ, ERASE))

    @property
    def auth_enabled(self) -> bool:
        """True when the read API and the dashboard's data need a credential."""
        return bool(self.api_keys) or self.auth.jwt_enabled

    @property
    def dlq_topic(self) -> str:
        return self.common.dlq_topic

    @property
    def event_types(self) -> EventTypes:
        """The event types this consumer stores (EVENT_TYPES); a record of any other is
        dead-lettered as `unknown_event_type`."""
        return EventTypes(self.common.event_types)

    @classmethod
    def from_env(cls, env: Environ | None = None) -> ConsumerSettings:
        settings = read_settings(cls, env)
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

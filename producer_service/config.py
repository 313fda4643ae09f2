"""The producer's settings, read from the environment once and validated at start.

Each field is declared once with its variable, default, bounds and doc (`setting`);
docs/configuration.md is generated from these declarations. A bad value raises
`ConfigError` naming the variable, so the process stops before it serves a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many

from shared.auth import WRITE, ApiKey, AuthSettings, parse_api_keys
from shared.config import (
    CommonSettings,
    EncryptionSettings,
    Environ,
    check_choices,
    read_settings,
    setting,
)
from shared.errors import ConfigError
from shared.event_rules import DEFAULT_MAX_PAYLOAD_BYTES
from shared.urls import check_bind_host, check_redis_url

COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
# gunicorn worker classes the publisher is built for (see docs/producer.md, worker model).
WORKER_CLASSES = ("gthread", "gevent", "sync")


def parse_rate_limit(text: str) -> tuple[RateLimitItem, ...]:
    """PRODUCER_RATE_LIMIT's limits (empty text: none), or ConfigError naming the variable."""
    if not text.strip():
        return ()
    try:
        items = tuple(parse_many(text))
    except ValueError as exc:
        raise ConfigError(
            "PRODUCER_RATE_LIMIT must be like 1000/second or 100/second;5000/hour (an amount "
            f"per second, minute, hour or day), got {text!r}: {exc}"
        ) from None
    if any(item.amount < 1 for item in items):
        raise ConfigError(f"PRODUCER_RATE_LIMIT amounts must be at least 1, got {text!r}")
    return items


@dataclass(frozen=True)
class ProducerSettings:
    """Everything the producer service reads from its environment."""

    common: CommonSettings = field(default_factory=CommonSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)
    bind_host: str = setting(
        "0.0.0.0",
        "PRODUCER_BIND_HOST",
        "listen address: an IP address (`0.0.0.0` all IPv4 interfaces, `::` all IPv6) or "
        "a host name",
        check=check_bind_host,
    )
    port: int = setting(8000, "PRODUCER_PORT", "listen port", lo=0, hi=65535)
    workers: int = setting(
        2, "PRODUCER_WORKERS", "gunicorn worker processes (one Kafka producer each)", lo=1, hi=64
    )
    worker_class: str = setting(
        "gevent",
        "PRODUCER_WORKER_CLASS",
        "gunicorn worker class: `gevent` (requests as greenlets), `gthread` (request "
        "threads; about 15 % more CPU per request) or `sync` (docs/producer.md, worker model)",
        choices=WORKER_CLASSES,
        case="lower",
    )
    threads: int = setting(
        32,
        "PRODUCER_THREADS",
        "request threads per worker (`gthread` only; a `gevent` worker takes up to "
        "gunicorn's 1,000 connections)",
        lo=1,
        hi=1024,
    )
    ack_timeout_ms: int = setting(
        5000,
        "PRODUCER_ACK_TIMEOUT_MS",
        "how long a request waits for Kafka's acknowledgement before a 503",
        lo=100,
        hi=300_000,
    )
    flush_timeout_ms: int = setting(
        10000,
        "PRODUCER_FLUSH_TIMEOUT_MS",
        "how long a stopping worker waits for outstanding deliveries",
        lo=0,
        hi=300_000,
    )
    linger_ms: int = setting(
        5,
        "PRODUCER_LINGER_MS",
        "librdkafka `linger.ms`: how long records wait to share a batch; less than "
        "`PRODUCER_ACK_TIMEOUT_MS`",
        lo=0,
        hi=1000,
    )
    compression: str = setting(
        "lz4",
        "PRODUCER_COMPRESSION",
        "compression of Kafka batches",
        choices=COMPRESSION_TYPES,
        case="lower",
    )
    # Off by default: it was ~5 % of a worker's CPU per request (docs/performance.md).
    log_events: bool = setting(
        False,
        "PRODUCER_LOG_EVENTS",
        "one INFO line per event published through `/events/generate` (`event_id`, "
        "`user_id`, `event_type`, `partition`, `offset`); failures are always logged",
    )
    max_batch_events: int = setting(
        1000,
        "PRODUCER_MAX_BATCH_EVENTS",
        "most events per `/events/batch` request",
        lo=1,
        hi=100_000,
    )
    # A full batch of 1,000 events averaging 4 KiB each (typical events are 100-200
    # bytes). It bounds what one request can make a worker parse and validate to ~0.1 s
    # of CPU; the previous bound, 1,000 x the single-event limit (37 MB), let one request
    # hold a worker's CPU for a minute.
    max_batch_bytes: int = setting(
        4 * 1024 * 1024,
        "PRODUCER_MAX_BATCH_BYTES",
        "largest `/events/batch` body; at least 2 x `PRODUCER_MAX_PAYLOAD_BYTES` + 4096",
        lo=1,
        hi=1 << 30,
        default_note="4 MiB",
    )
    max_payload_bytes: int = setting(
        DEFAULT_MAX_PAYLOAD_BYTES,
        "PRODUCER_MAX_PAYLOAD_BYTES",
        "largest `payload`, as compact JSON",
        lo=2,
        hi=900_000,
    )
    api_keys: tuple[str, ...] = setting(
        (),
        "PRODUCER_API_KEYS",
        "API keys accepted in `X-API-Key` (or as a bearer token), comma-separated; an item "
        "`KEY` grants `events:write`, `KEY SCOPE...` only the scopes listed (docs/security.md); "
        "empty, and no JWT key: no authentication",
        repr=False,  # secrets: never printed
    )
    rate_limit: str = setting(
        "",
        "PRODUCER_RATE_LIMIT",
        "quota of events per API key (per client address without keys) in Flask-Limiter's "
        "syntax, e.g. `1000/second` or `100/second;5000/hour`; empty: no limit",
        required=False,
    )
    # CommonSettings.redis_url always has a value; this one is REDIS_URL only when it is
    # set. Holds a password, so never printed.
    rate_limit_redis_url: str | None = setting(
        None,
        "REDIS_URL",
        "the producer uses it only when set (not its default): the quota's counters then "
        "live in Redis, shared by every producer process; unset, each process keeps its own",
        repr=False,
    )
    rate_limit_prefix: str = setting(
        "producer-quota", "PRODUCER_RATE_LIMIT_PREFIX", "prefix of the quota's Redis keys"
    )
    redis_prefix: str = setting(
        "ua",
        "PRODUCER_REDIS_PREFIX",
        "with `PAYLOAD_ENCRYPTION_KEYS`: the consumers' `CONSUMER_REDIS_PREFIX`, under which "
        "the users' data keys live",
    )

    tracking_max_batch_bytes: int = setting(
        500 * 1024,
        "TRACKING_MAX_BATCH_BYTES",
        "largest tracking API request (`/v1/*`), after gzip is undone, and largest batch "
        "`context` times its number of messages; 413 beyond",
        lo=1024,
        hi=64 * 1024 * 1024,
        default_note="500 KiB",
    )
    tracking_max_message_bytes: int = setting(
        32 * 1024,
        "TRACKING_MAX_MESSAGE_BYTES",
        "largest tracking API message, as the event it becomes; a single call beyond it "
        "gets 413, a batch's message beyond it is reported invalid",
        lo=256,
        hi=900_000,
        default_note="32 KiB",
    )
    tracking_page_event_type: str = setting(
        "PAGE_VIEW",
        "TRACKING_PAGE_EVENT_TYPE",
        "eventType of a tracking API `page` message; empty, or a type EVENT_TYPES does not "
        "admit: such messages are accepted and ignored",
        required=False,
    )
    tracking_screen_event_type: str = setting(
        "SCREEN_VIEW",
        "TRACKING_SCREEN_EVENT_TYPE",
        "eventType of a `screen` message; empty or not admitted: ignored",
        required=False,
    )
    tracking_identify_event_type: str = setting(
        "IDENTIFY",
        "TRACKING_IDENTIFY_EVENT_TYPE",
        "eventType of an `identify` message; empty or not admitted: ignored",
        required=False,
    )
    tracking_group_event_type: str = setting(
        "GROUP",
        "TRACKING_GROUP_EVENT_TYPE",
        "eventType of a `group` message; empty or not admitted: ignored",
        required=False,
    )
    tracking_alias_event_type: str = setting(
        "ALIAS",
        "TRACKING_ALIAS_EVENT_TYPE",
        "eventType of an `alias` message; empty or not admitted: ignored",
        required=False,
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.max_batch_bytes < self.max_event_body_bytes:
            raise ConfigError(
                f"PRODUCER_MAX_BATCH_BYTES must be at least {self.max_event_body_bytes} "
                "(2 x PRODUCER_MAX_PAYLOAD_BYTES + 4096), so an event that may be posted "
                "alone fits in a batch"
            )
        # librdkafka rejects a linger as long as the delivery timeout; say it in our terms.
        if self.linger_ms >= self.ack_timeout_ms:
            raise ConfigError("PRODUCER_LINGER_MS must be smaller than PRODUCER_ACK_TIMEOUT_MS")
        parse_rate_limit(self.rate_limit)
        self.parsed_api_keys()
        if self.rate_limit_redis_url is not None:
            check_redis_url("REDIS_URL", self.rate_limit_redis_url)
        if not self.rate_limit_prefix:
            raise ConfigError("PRODUCER_RATE_LIMIT_PREFIX must not be empty")
        if self.encryption.enabled and self.rate_limit_redis_url is None:
            raise ConfigError(
                "PAYLOAD_ENCRYPTION_KEYS needs REDIS_URL set: the producer keeps the users' "
                "data keys in the consumers' Redis"
            )

    def parsed_api_keys(self) -> tuple[ApiKey, ...]:
        """PRODUCER_API_KEYS with the scopes of each key; ConfigError for a bad item."""
        return parse_api_keys("PRODUCER_API_KEYS", self.api_keys, (WRITE,))

    @property
    def auth_enabled(self) -> bool:
        """True when requests to /events must present a credential."""
        return bool(self.api_keys) or self.auth.jwt_enabled

    @property
    def event_types(self) -> tuple[str, ...]:
        """The allowed `eventType` values (EVENT_TYPES, read by both services)."""
        return self.common.event_types

    @property
    def tracking_kind_types(self) -> dict[str, str]:
        """The eventType of each tracking API message kind but `track`."""
        return {
            "page": self.tracking_page_event_type,
            "screen": self.tracking_screen_event_type,
            "identify": self.tracking_identify_event_type,
            "group": self.tracking_group_event_type,
            "alias": self.tracking_alias_event_type,
        }

    @property
    def rate_limits(self) -> tuple[RateLimitItem, ...]:
        """The parsed PRODUCER_RATE_LIMIT; empty when there is no limit."""
        return parse_rate_limit(self.rate_limit)

    @property
    def ack_timeout(self) -> float:
        """Seconds a request waits for Kafka's acknowledgement before answering 503."""
        return self.ack_timeout_ms / 1000

    @property
    def flush_timeout(self) -> float:
        """Seconds a stopping worker waits for outstanding deliveries."""
        return self.flush_timeout_ms / 1000

    @property
    def max_event_body_bytes(self) -> int:
        """Request body limit of POST /events/generate: the payload cap plus room for the
        other fields and JSON whitespace, so the payload validator reports the real problem
        for payloads just over the cap instead of a bare 413."""
        return self.max_payload_bytes * 2 + 4096

    @property
    def max_batch_body_bytes(self) -> int:
        """Request body limit of POST /events/batch: `max_batch_bytes`, or less when the
        batch's events at their own limit could not need that much."""
        return min(self.max_batch_bytes, self.max_batch_events * self.max_event_body_bytes)

    @classmethod
    def from_env(cls, env: Environ | None = None) -> ProducerSettings:
        return read_settings(cls, env)

"""The producer's settings, read from the environment once and validated at start.

Every variable is documented with its default in docs/producer.md. A bad value raises
`ConfigError` naming the variable, so the process stops before it serves a request.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many

from shared.config import (
    DEFAULT_EVENT_TYPES,
    REDIS_SCHEMES,
    CommonSettings,
    Environ,
    env_bool,
    env_int,
    env_list,
    env_optional,
    env_str,
)
from shared.errors import ConfigError
from shared.events import DEFAULT_MAX_PAYLOAD_BYTES, EVENT_TYPE_MAX

COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
# gunicorn worker classes the publisher is built for (see docs/producer.md, worker model).
WORKER_CLASSES = ("gthread", "gevent", "sync")
EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]+$")


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
    bind_host: str = "0.0.0.0"
    port: int = 8000
    workers: int = 2
    worker_class: str = "gevent"
    threads: int = 32
    ack_timeout_ms: int = 5000
    flush_timeout_ms: int = 10000
    linger_ms: int = 5
    compression: str = "lz4"
    # One INFO line per event published through /events/generate (event_id, user_id,
    # event_type, partition, offset), as the replaced service wrote. Off by default: it
    # was ~5 % of a worker's CPU per request (docs/performance.md); failures are always
    # logged.
    log_events: bool = False
    max_batch_events: int = 1000
    # 4 MiB: a full batch of 1,000 events averaging 4 KiB each (typical events are
    # 100-200 bytes). It bounds what one request can make a worker parse and validate to
    # ~0.1 s of CPU; the previous bound, 1,000 x the single-event limit (37 MB), let one
    # request hold a worker's CPU for a minute.
    max_batch_bytes: int = 4 * 1024 * 1024
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # secrets: never printed
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    # PRODUCER_RATE_LIMIT in Flask-Limiter's syntax ("1000/second", "100/second;5000/hour"),
    # charged per API key, or per client address when no keys are set; empty is no limit.
    rate_limit: str = ""
    # REDIS_URL when it is set in the environment (CommonSettings.redis_url always has a
    # value): the limit's counters then live in Redis, shared by every producer process.
    # None keeps them in each process's memory. Holds a password, so never printed.
    rate_limit_redis_url: str | None = field(default=None, repr=False)
    rate_limit_prefix: str = "producer-quota"

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSION_TYPES:
            raise ConfigError(
                f"PRODUCER_COMPRESSION must be one of {', '.join(COMPRESSION_TYPES)}, "
                f"got {self.compression!r}"
            )
        if self.worker_class not in WORKER_CLASSES:
            raise ConfigError(
                f"PRODUCER_WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}, "
                f"got {self.worker_class!r}"
            )
        if not self.event_types:
            raise ConfigError("EVENT_TYPES must name at least one event type")
        for name in self.event_types:
            if len(name) > EVENT_TYPE_MAX or not EVENT_TYPE_PATTERN.match(name):
                raise ConfigError(
                    f"EVENT_TYPES item {name!r} must be 1-{EVENT_TYPE_MAX} characters "
                    "of letters, digits, '_', '.', ':' or '-'"
                )
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
        url = self.rate_limit_redis_url
        if url is not None and url.split("://", 1)[0].lower() not in REDIS_SCHEMES:
            raise ConfigError("REDIS_URL must start with redis://, rediss:// (TLS) or unix://")
        if not self.rate_limit_prefix:
            raise ConfigError("PRODUCER_RATE_LIMIT_PREFIX must not be empty")

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
        env = os.environ if env is None else env
        return cls(
            common=CommonSettings.from_env(env),
            bind_host=env_str(env, "PRODUCER_BIND_HOST", cls.bind_host),
            port=env_int(env, "PRODUCER_PORT", cls.port, minimum=0, maximum=65535),
            workers=env_int(env, "PRODUCER_WORKERS", cls.workers, minimum=1, maximum=64),
            worker_class=env_str(env, "PRODUCER_WORKER_CLASS", cls.worker_class).lower(),
            threads=env_int(env, "PRODUCER_THREADS", cls.threads, minimum=1, maximum=1024),
            ack_timeout_ms=env_int(
                env, "PRODUCER_ACK_TIMEOUT_MS", cls.ack_timeout_ms, minimum=100, maximum=300_000
            ),
            flush_timeout_ms=env_int(
                env, "PRODUCER_FLUSH_TIMEOUT_MS", cls.flush_timeout_ms, minimum=0, maximum=300_000
            ),
            linger_ms=env_int(env, "PRODUCER_LINGER_MS", cls.linger_ms, minimum=0, maximum=1000),
            compression=env_str(env, "PRODUCER_COMPRESSION", cls.compression).lower(),
            log_events=env_bool(env, "PRODUCER_LOG_EVENTS", cls.log_events),
            max_batch_events=env_int(
                env, "PRODUCER_MAX_BATCH_EVENTS", cls.max_batch_events, minimum=1, maximum=100_000
            ),
            max_batch_bytes=env_int(
                env, "PRODUCER_MAX_BATCH_BYTES", cls.max_batch_bytes, minimum=1, maximum=1 << 30
            ),
            max_payload_bytes=env_int(
                env, "PRODUCER_MAX_PAYLOAD_BYTES", cls.max_payload_bytes, minimum=2, maximum=900_000
            ),
            api_keys=env_list(env, "PRODUCER_API_KEYS", ()),
            event_types=env_list(env, "EVENT_TYPES", DEFAULT_EVENT_TYPES),
            rate_limit=env.get("PRODUCER_RATE_LIMIT", "").strip(),
            rate_limit_redis_url=env_optional(env, "REDIS_URL"),
            rate_limit_prefix=env_str(env, "PRODUCER_RATE_LIMIT_PREFIX", cls.rate_limit_prefix),
        )

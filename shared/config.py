"""Reading settings from the environment.

Each service parses its settings once at start into a frozen dataclass, using the
helpers below, so a bad value stops the process with a message naming the variable
instead of failing later on a request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from shared.errors import ConfigError

Environ = Mapping[str, str]


def env_str(env: Environ, name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if not value:
        raise ConfigError(f"{name} must not be empty")
    return value


def env_int(
    env: Environ, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_float(
    env: Environ,
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    maximum: float | None = None,
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    # float() takes "nan" and "inf"; NaN passes every comparison below.
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_list(env: Environ, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list; blanks around items are ignored, empty items dropped."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def env_bool(env: Environ, name: str, default: bool) -> bool:
    """true/false, 1/0, yes/no (any case); unset or blank is `default`. Anything else is
    a ConfigError: a switch whose typo silently means "on" (or "off") is worse than none."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of true/false, 1/0, yes/no, got {raw!r}")


def env_log_level(env: Environ, name: str = "LOG_LEVEL", default: str = "INFO") -> str:
    level = env.get(name, default).strip().upper() or default
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"{name} must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


DEFAULT_EVENT_TYPES = ("LOGIN", "LOGOUT", "PRODUCT_VIEW")


@dataclass(frozen=True)
class CommonSettings:
    """Settings both services read, with the names users and scripts rely on."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "user-activity-events"
    kafka_topic_partitions: int = 6
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "INFO"

    @property
    def dlq_topic(self) -> str:
        return f"{self.kafka_topic}.dlq"

    @classmethod
    def from_env(cls, env: Environ | None = None) -> CommonSettings:
        env = os.environ if env is None else env
        return cls(
            kafka_bootstrap_servers=env_str(
                env, "KAFKA_BOOTSTRAP_SERVERS", cls.kafka_bootstrap_servers
            ),
            kafka_topic=env_str(env, "KAFKA_TOPIC", cls.kafka_topic),
            kafka_topic_partitions=env_int(
                env, "KAFKA_TOPIC_PARTITIONS", cls.kafka_topic_partitions, minimum=1, maximum=10_000
            ),
            redis_url=env_str(env, "REDIS_URL", cls.redis_url),
            log_level=env_log_level(env),
        )


SECRET_MARKERS = ("password", "secret", "api_keys", "token")


def redacted(settings: Any) -> dict[str, Any]:
    """The settings as a dict fit for a log line: secrets replaced, URLs' passwords hidden."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if any(marker in f.name for marker in SECRET_MARKERS):
            value = "***" if value else value
        elif isinstance(value, str) and "@" in value and "://" in value:
            scheme, rest = value.split("://", 1)
            value = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        elif isinstance(value, CommonSettings):
            value = redacted(value)
        out[f.name] = value
    return out

"""Reading settings from the environment.

Each service parses its settings once at start into a frozen dataclass, using the
helpers below, so a bad value stops the process with a message naming the variable
instead of failing later on a request.
"""

from __future__ import annotations

import dataclasses
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


def env_optional(env: Environ, name: str) -> str | None:
    """The value with blanks around it removed; unset or blank is None."""
    value = env.get(name, "").strip()
    return value or None


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

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class CommonSettings:
    """Settings both services read, with the names users and scripts rely on.

    Kafka's security settings are checked as a whole when the object is built (from the
    environment or directly): a SASL protocol needs a mechanism, a username and a password;
    credentials or a CA file without a protocol that uses them are refused rather than
    ignored. `repr()` hides the password and the password of REDIS_URL.
    """

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "user-activity-events"
    kafka_topic_partitions: int = 6
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "INFO"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_ca_location: str | None = None

    def __post_init__(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
                f"got {protocol!r}"
            )
        sasl = {
            "KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if protocol.startswith("SASL_"):
            missing = [name for name, value in sasl.items() if not value]
            if missing:
                raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise ConfigError(
                    f"KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
                    f"got {self.kafka_sasl_mechanism!r}"
                )
        else:
            # Credentials that would be silently ignored usually mean a forgotten protocol,
            # and the symptom (a broker that drops the connection) would say nothing of it.
            given = [name for name, value in sasl.items() if value]
            if given:
                raise ConfigError(
                    f"{', '.join(given)} set, but KAFKA_SECURITY_PROTOCOL={protocol} does not "
                    "use SASL: set it to SASL_SSL or SASL_PLAINTEXT"
                )
        if self.kafka_ssl_ca_location and not protocol.endswith("SSL"):
            raise ConfigError(
                f"KAFKA_SSL_CA_LOCATION set, but KAFKA_SECURITY_PROTOCOL={protocol} does not "
                "use TLS: set it to SSL or SASL_SSL"
            )
        scheme = self.redis_url.split("://", 1)[0].lower() if "://" in self.redis_url else ""
        if scheme not in REDIS_SCHEMES:
            raise ConfigError(
                "REDIS_URL must start with redis://, rediss:// (TLS) or unix://, got "
                f"{redact_url(self.redis_url)!r}"
            )

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in redacted(self).items())
        return f"{type(self).__name__}({shown})"

    @property
    def dlq_topic(self) -> str:
        return f"{self.kafka_topic}.dlq"

    @classmethod
    def from_env(cls, env: Environ | None = None) -> CommonSettings:
        env = os.environ if env is None else env
        ca = env_optional(env, "KAFKA_SSL_CA_LOCATION")
        if ca is not None and not os.path.isfile(ca):
            raise ConfigError(f"KAFKA_SSL_CA_LOCATION {ca!r} is not a readable file")
        mechanism = env_optional(env, "KAFKA_SASL_MECHANISM")
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
            kafka_security_protocol=env_str(
                env, "KAFKA_SECURITY_PROTOCOL", cls.kafka_security_protocol
            ).upper(),
            kafka_sasl_mechanism=mechanism.upper() if mechanism else None,
            kafka_sasl_username=env_optional(env, "KAFKA_SASL_USERNAME"),
            # Not stripped: a password may begin or end with a blank.
            kafka_sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
            kafka_ssl_ca_location=ca,
        )


SECRET_MARKERS = ("password", "secret", "api_keys", "token")
HIDDEN = "***"


def redact_url(url: str) -> str:
    """`url` fit for a log line: the password of its user part (`scheme://user:pw@host`;
    all of the user part when it has no `user:`) and any `password=` query value become
    `***`. Parsed by hand rather than by urllib, which would leave an unescaped `/` or `#`
    of a password in the path, in plain sight: everything before the last `@` counts as
    the user part."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return HIDDEN if "@" in url else url
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        if any(c in user for c in "/?#"):
            user = ""
        rest = f"{user}:{HIDDEN}@{rest}"
    location, qmark, query = rest.partition("?")
    if qmark:
        items = [item.partition("=") for item in query.split("&")]
        query = "&".join(f"{k}{eq}{HIDDEN if 'password' in k.lower() else v}" for k, eq, v in items)
    return f"{scheme}://{location}{qmark}{query}"


def redacted(settings: Any) -> dict[str, Any]:
    """The settings (a dataclass) as a dict fit for a log line: fields named like secrets
    replaced by `***` when set, passwords inside URLs hidden, nested settings likewise."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if any(marker in f.name for marker in SECRET_MARKERS):
            value = HIDDEN if value else value
        elif isinstance(value, str) and "://" in value:
            value = redact_url(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = redacted(value)
        out[f.name] = value
    return out

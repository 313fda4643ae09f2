"""Settings read from the environment, each declared once.

A settings class is a frozen dataclass whose fields are made by `setting(...)`: a field's
default, its variable name, its bounds or choices and a one-line doc sit together.
`read_settings` parses every declared field by its annotated type, so a bad value stops
the process at start with a message naming the variable instead of failing later on a
request; docs/configuration.md is generated from the same declarations
(infra/configuration_doc.py), so the reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_type_hints

from shared.errors import ConfigError
from shared.event_rules import EVENT_TYPE_MAX, FREE_EVENT_NAMES
from shared.payload_crypto import MasterKeys, parse_master_keys
from shared.urls import (
    HIDDEN,
    KAFKA_SECURITY_PROTOCOLS,
    check_bootstrap_servers,
    check_redis_url,
    redact_url,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Environ = Mapping[str, str]
T = TypeVar("T")
S = TypeVar("S", bound="DataclassInstance")
SETTING = "setting"  # the key of a field's `Setting` in its dataclass metadata

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


@dataclass(frozen=True)
class Setting:
    """How one field is read from its variable `env` and how the docs describe it.

    Unset variables keep the field's default; so do blank ones, except for a plain `str`
    field that is `required` (blank is then an error). `str | None` fields are None when
    unset or blank. A number outside `lo`..`hi` (inclusive) is refused as it is read;
    `choices` are checked when the object is built (`check_choices`, from the class's
    `__post_init__`), after `case` folded the text. `strip=False` keeps blanks around a
    value (a password may have them). `check` sees a set value and raises ConfigError for
    one it refuses. `old_env` is a former name still read: when both are set they must
    agree. `doc` (one line) and `default_note` (e.g. "7 days") are for the configuration
    reference.
    """

    env: str
    doc: str
    lo: int | float | None = None
    hi: int | float | None = None
    choices: tuple[str, ...] = ()
    case: Literal["upper", "lower"] | None = None
    required: bool = True
    strip: bool = True
    check: Callable[[str, str], None] | None = None
    old_env: str | None = None
    default_note: str | None = None

    def read(self, env: Environ, kind: object, default: Any) -> Any:
        """The value of this setting in `env`, parsed as `kind`; ConfigError if refused."""
        value = self._parse(self.env, env.get(self.env), kind, default)
        if self.old_env is None:
            return value
        old = self._parse(self.old_env, env.get(self.old_env), kind, default)
        # A base file setting one name and an override the other must not be ambiguous.
        if _is_set(env, self.env) and _is_set(env, self.old_env) and value != old:
            raise ConfigError(
                f"{self.env} and {self.old_env} (its old name) disagree; set only the first"
            )
        return value if _is_set(env, self.env) else old

    def _parse(self, name: str, raw: str | None, kind: object, default: Any) -> Any:
        if kind == str | None:
            text = raw or ""
            text = self._fold(text.strip() if self.strip else text)
            if text and self.check is not None:
                self.check(name, text)
            return text or None
        if kind is str:
            text = "" if raw is None else raw.strip()
            if raw is not None and not text and self.required:
                raise ConfigError(f"{name} must not be empty")
            if text and self.check is not None:
                self.check(name, text)
            return self._fold(text or default)
        if raw is None or not raw.strip():
            return default
        if kind is bool:
            return _parse_bool(name, raw)
        if kind == tuple[str, ...]:
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        if kind is int or kind is float:
            return self._bounded(name, _parse_number(name, raw, kind))
        raise TypeError(f"{name}: no parser for a setting of type {kind!r}")

    def _fold(self, text: str) -> str:
        if self.case == "upper":
            return text.upper()
        return text.lower() if self.case == "lower" else text

    def _bounded(self, name: str, value: float) -> float:
        if self.lo is not None and value < self.lo:
            raise ConfigError(f"{name} must be >= {self.lo}, got {value}")
        if self.hi is not None and value > self.hi:
            raise ConfigError(f"{name} must be <= {self.hi}, got {value}")
        return value


def _is_set(env: Environ, name: str) -> bool:
    return env.get(name, "").strip() != ""


def _parse_bool(name: str, raw: str) -> bool:
    """true/false, 1/0, yes/no (any case). Anything else is a ConfigError: a switch whose
    typo silently means "on" (or "off") is worse than none."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of true/false, 1/0, yes/no, got {raw!r}")


def _parse_number(name: str, raw: str, kind: object) -> float:
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    # float() takes "nan" and "inf"; NaN passes every bound.
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def setting(
    default: T,
    env: str,
    doc: str,
    *,
    lo: int | float | None = None,
    hi: int | float | None = None,
    choices: tuple[str, ...] = (),
    case: Literal["upper", "lower"] | None = None,
    required: bool = True,
    strip: bool = True,
    check: Callable[[str, str], None] | None = None,
    old_env: str | None = None,
    default_note: str | None = None,
    repr: bool = True,
) -> T:
    """A dataclass field read from the variable `env` (see `Setting` for the rest)."""
    spec = Setting(
        env=env,
        doc=doc,
        lo=lo,
        hi=hi,
        choices=choices,
        case=case,
        required=required,
        strip=strip,
        check=check,
        old_env=old_env,
        default_note=default_note,
    )
    return field(default=default, repr=repr, metadata={SETTING: spec})


def declared(cls: Any) -> list[tuple[dataclasses.Field[Any], Setting]]:
    """The fields of settings class (or object) `cls` read from a variable, in order."""
    return [(f, f.metadata[SETTING]) for f in fields(cls) if SETTING in f.metadata]


def read_settings(cls: type[S], env: Environ | None = None) -> S:
    """`cls` built from `env` (`os.environ` by default): every field declared with
    `setting` read from its variable, a nested settings dataclass read likewise. Raises
    ConfigError naming the variable of the first value it refuses."""
    env = os.environ if env is None else env
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        kind = hints[f.name]
        if SETTING in f.metadata:
            values[f.name] = f.metadata[SETTING].read(env, kind, f.default)
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            values[f.name] = read_settings(kind, env)
    return cls(**values)


def check_choices(settings: Any, *names: str) -> None:
    """ConfigError naming the variable of the first declared field of `settings` (of those
    `names`, when given) whose value is not one of its choices; None (an unset optional)
    passes."""
    for f, spec in declared(settings):
        if names and f.name not in names:
            continue
        value = getattr(settings, f.name)
        if spec.choices and value is not None and value not in spec.choices:
            raise ConfigError(f"{spec.env} must be one of {', '.join(spec.choices)}, got {value!r}")


DEFAULT_EVENT_TYPES = ("LOGIN", "LOGOUT", "PRODUCT_VIEW")
# Bounds what the types can make the consumer keep: one index key and one stats field per
# type, and a row each on the dashboard.
MAX_EVENT_TYPES = 1000
EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _readable_file(name: str, path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"{name} {path!r} is not a readable file")


@dataclass(frozen=True)
class CommonSettings:
    """Settings both services read, with the names users and scripts rely on.

    Kafka's security settings are checked as a whole when the object is built (from the
    environment or directly): a SASL protocol needs a mechanism, a username and a password;
    credentials or a CA file without a protocol that uses them are refused rather than
    ignored. `repr()` hides the password and the password of REDIS_URL.
    """

    kafka_bootstrap_servers: str = setting(
        "127.0.0.1:9092",
        "KAFKA_BOOTSTRAP_SERVERS",
        "Kafka bootstrap servers, comma-separated `host[:port]`, each optionally after "
        "`<protocol>://`; checked at start",
    )
    kafka_topic: str = setting(
        "user-activity-events",
        "KAFKA_TOPIC",
        "the event topic; the dead-letter topic is `<topic>.dlq`",
    )
    kafka_topic_partitions: int = setting(
        6,
        "KAFKA_TOPIC_PARTITIONS",
        "partitions of the topics `infra/topics.py` creates; the consumer gives a missing "
        "dead-letter topic the event topic's count, or this one",
        lo=1,
        hi=10_000,
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        "REDIS_URL",
        "Redis: `redis://`, `rediss://` (TLS) or `unix://`, with an optional "
        "`user:password@` (shown as `***` in logs) whose `/ ? # @ %` are percent-encoded "
        "(`%2F %3F %23 %40 %25`); checked at start; for the consumer, run it with "
        "`appendfsync always` and `maxmemory-policy noeviction`",
    )
    log_level: str = setting(
        "INFO",
        "LOG_LEVEL",
        "level of the JSON log lines",
        choices=LOG_LEVELS,
        case="upper",
        required=False,
    )
    kafka_security_protocol: str = setting(
        "PLAINTEXT",
        "KAFKA_SECURITY_PROTOCOL",
        "how clients reach the brokers; a `SASL_*` protocol needs the three SASL settings",
        choices=KAFKA_SECURITY_PROTOCOLS,
        case="upper",
    )
    kafka_sasl_mechanism: str | None = setting(
        None,
        "KAFKA_SASL_MECHANISM",
        "required with a `SASL_*` protocol, refused without one",
        choices=KAFKA_SASL_MECHANISMS,
        case="upper",
    )
    kafka_sasl_username: str | None = setting(
        None, "KAFKA_SASL_USERNAME", "the SASL user; required with a `SASL_*` protocol"
    )
    kafka_sasl_password: str | None = setting(
        None,
        "KAFKA_SASL_PASSWORD",
        "the SASL password, taken as is (not stripped); required with a `SASL_*` protocol; "
        "shown as `***` in logs",
        strip=False,
    )
    kafka_ssl_ca_location: str | None = setting(
        None,
        "KAFKA_SSL_CA_LOCATION",
        "a PEM file of the CA that signed the brokers' certificates (unset: the system's "
        "CAs); only with `SSL` / `SASL_SSL`, and the file must exist",
        check=_readable_file,
    )
    event_types: tuple[str, ...] = setting(
        DEFAULT_EVENT_TYPES,
        "EVENT_TYPES",
        f"the `eventType` values there are, comma-separated, at most {MAX_EVENT_TYPES:,}; "
        f"each 1-{EVENT_TYPE_MAX} letters, digits, `_`, `.`, `:` or `-`; `*` admits "
        "free-text names besides (`Order Completed`: docs/tracking-api.md); the producer "
        "refuses any other (400), the consumer dead-letters it (`unknown_event_type`); "
        "add a type to the consumers before the producers (docs/consumer.md)",
    )

    def __post_init__(self) -> None:
        check_choices(self, "log_level", "kafka_security_protocol")
        # A mechanism without a SASL protocol is reported as such before its spelling.
        self._check_sasl()
        check_choices(self)
        self._check_event_types()
        if self.kafka_ssl_ca_location and not self.kafka_security_protocol.endswith("SSL"):
            raise ConfigError(
                f"KAFKA_SSL_CA_LOCATION set, but KAFKA_SECURITY_PROTOCOL="
                f"{self.kafka_security_protocol} does not use TLS: set it to SSL or SASL_SSL"
            )
        check_bootstrap_servers("KAFKA_BOOTSTRAP_SERVERS", self.kafka_bootstrap_servers)
        check_redis_url("REDIS_URL", self.redis_url)

    def _check_event_types(self) -> None:
        if not self.event_types:
            raise ConfigError("EVENT_TYPES must name at least one event type")
        if len(self.event_types) > MAX_EVENT_TYPES:
            raise ConfigError(
                f"EVENT_TYPES names {len(self.event_types)} event types; at most "
                f"{MAX_EVENT_TYPES} are allowed"
            )
        for name in self.event_types:
            if name == FREE_EVENT_NAMES:
                continue
            if len(name) > EVENT_TYPE_MAX or not EVENT_TYPE_PATTERN.fullmatch(name):
                raise ConfigError(
                    f"EVENT_TYPES item {name!r} must be 1-{EVENT_TYPE_MAX} characters "
                    "of letters, digits, '_', '.', ':' or '-'"
                )

    def _check_sasl(self) -> None:
        protocol = self.kafka_security_protocol
        sasl = {
            "KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if protocol.startswith("SASL_"):
            missing = [name for name, value in sasl.items() if not value]
            if missing:
                raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
            return
        # Credentials that would be silently ignored usually mean a forgotten protocol, and
        # the symptom (a broker that drops the connection) would say nothing of it.
        given = [name for name, value in sasl.items() if value]
        if given:
            raise ConfigError(
                f"{', '.join(given)} set, but KAFKA_SECURITY_PROTOCOL={protocol} does not "
                "use SASL: set it to SASL_SSL or SASL_PLAINTEXT"
            )

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in redacted(self).items())
        return f"{type(self).__name__}({shown})"

    @property
    def dlq_topic(self) -> str:
        return f"{self.kafka_topic}.dlq"

    @classmethod
    def from_env(cls, env: Environ | None = None) -> CommonSettings:
        return read_settings(cls, env)


SECRET_MARKERS = ("password", "secret", "api_keys", "token", "encryption_keys")


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


def _check_master_keys(name: str, text: str) -> None:
    try:
        parse_master_keys(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class EncryptionSettings:
    """Payload encryption (crypto-shredding, docs/personal-data.md); both services read
    the same variables and need the same keys. Off while PAYLOAD_ENCRYPTION_KEYS is unset.
    `repr()` hides the keys."""

    payload_encryption_keys: str | None = setting(
        None,
        "PAYLOAD_ENCRYPTION_KEYS",
        "master keys, comma-separated `<id>:<base64 of 32 bytes>`; the first wraps new data "
        "keys, every one unwraps (rotation: docs/personal-data.md); unset: payloads are not "
        "encrypted; shown as `***` in logs",
        check=_check_master_keys,
    )
    payload_key_cache_seconds: float = setting(
        1.0,
        "PAYLOAD_KEY_CACHE_SECONDS",
        "how often a process reads the erasure counter and drops its cached data keys if "
        "it moved: after an erasure, a producer may seal that user's new events under the "
        "deleted key for this long (they are dropped as erased); 0: on every request",
        lo=0,
        hi=60,
    )
    payload_key_cache_size: int = setting(
        10_000,
        "PAYLOAD_KEY_CACHE_SIZE",
        "unwrapped data keys each process keeps (least recently used go first)",
        lo=0,
        hi=10_000_000,
    )

    @property
    def enabled(self) -> bool:
        return self.payload_encryption_keys is not None

    def master_keys(self) -> MasterKeys:
        """The parsed PAYLOAD_ENCRYPTION_KEYS (call only when `enabled`)."""
        assert self.payload_encryption_keys is not None
        return parse_master_keys(self.payload_encryption_keys)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in redacted(self).items())
        return f"{type(self).__name__}({shown})"

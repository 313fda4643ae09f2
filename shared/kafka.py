"""The librdkafka settings of every Kafka client in the project, built in one place.

Each client (the producer service's, the worker's consumer, the DLQ producer, the admin
clients of the read API, the dashboard, `pipeline-admin` and the infra scripts) takes
its connection and security settings from `client_config`, and adds only what its role
needs (acks, group id, timeouts). So a secured cluster is configured once, through
KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_*, and no client can be left on PLAINTEXT.

Nothing here imports a Kafka client: `shared` holds definitions (the event's shapes,
settings, this configuration) and talks to no broker, so its tests need no network and
each service keeps its clients to itself. The builder returns a plain dict of librdkafka
properties, and `AuthenticationWatch` only reads the `name()` and `str()` of the error
objects confluent-kafka hands to an `error_cb`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from shared.config import CommonSettings
from shared.errors import ConfigError

# librdkafka's properties that `connection_config` owns. A client's role settings may
# not set them: that is how clients used to drift apart.
CONNECTION_KEYS = frozenset(
    {
        "bootstrap.servers",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
    }
)

# The prefetch of every consumer (a role with a `group.id`), unless its role says
# otherwise. librdkafka's defaults keep up to 100,000 records per partition (or 64 MiB)
# fetched ahead, so a consumer that falls behind its topic holds ~900 bytes of heap per
# record waiting (the record, its op and its decompressed batch), and its RSS climbs by
# tens of MiB before it levels off (docs/performance.md, "Consumer memory"). A few
# thousand records are 100-200 ms of the worker's work, far more than a local fetch takes
# to come back; small fetches cap what one response adds on top; and a full queue is
# looked at again after 10 ms instead of librdkafka's 1 s, the wait that made a small
# queue starve the worker.
CONSUMER_FETCH_DEFAULTS: Mapping[str, Any] = {
    "queued.min.messages": 5000,
    "fetch.message.max.bytes": 64 * 1024,
    "fetch.queue.backoff.ms": 10,
}

# What librdkafka reports, through error_cb, when the broker refused the credentials
# (`_AUTHENTICATION`, client side) or the broker's own error code for it.
AUTHENTICATION_ERRORS = frozenset({"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED"})


def connection_config(common: CommonSettings | str) -> dict[str, Any]:
    """`bootstrap.servers` and the security properties of `common`. A bare string is a
    bootstrap address reached over PLAINTEXT without credentials (what the local stack's
    scripts and tests use for the local listener)."""
    if isinstance(common, str):
        return {"bootstrap.servers": common}
    config: dict[str, Any] = {
        "bootstrap.servers": common.kafka_bootstrap_servers,
        "security.protocol": common.kafka_security_protocol.lower(),
    }
    if common.kafka_security_protocol.startswith("SASL_"):
        config["sasl.mechanism"] = common.kafka_sasl_mechanism
        config["sasl.username"] = common.kafka_sasl_username
        config["sasl.password"] = common.kafka_sasl_password
    if common.kafka_ssl_ca_location:
        config["ssl.ca.location"] = common.kafka_ssl_ca_location
    return config


def client_config(
    common: CommonSettings | str, role: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A new dict: `connection_config(common)` plus the client's `role` properties, and,
    for a consumer (a role with `group.id`), `CONSUMER_FETCH_DEFAULTS` under them.
    Raises ValueError when `role` sets a connection property (a programming error: the
    connection comes from the settings alone)."""
    role = role or {}
    clash = CONNECTION_KEYS.intersection(role)
    if clash:
        raise ValueError(f"role settings may not set {sorted(clash)}: use CommonSettings")
    defaults = CONSUMER_FETCH_DEFAULTS if "group.id" in role else {}
    return {**connection_config(common), **defaults, **role}


def describe(common: CommonSettings | str) -> str:
    """Where and how a client connects, for error messages: never the password."""
    if isinstance(common, str):
        return common
    how = common.kafka_security_protocol
    if how.startswith("SASL_"):
        how = f"{how}/{common.kafka_sasl_mechanism} as {common.kafka_sasl_username!r}"
    return f"{common.kafka_bootstrap_servers} ({how})"


class KafkaAuthenticationFailed(ConfigError):
    """The broker refused the client's credentials (or its TLS/SASL set-up). Retrying
    with the same settings cannot help: the process stops with this message."""


class _ClientError(Protocol):
    def name(self) -> str: ...
    def str(self) -> str: ...


class AuthenticationWatch:
    """An `error_cb` for a confluent-kafka client that remembers the last authentication
    failure, so that a caller whose request timed out can tell "wrong password" from
    "broker away".

    librdkafka reports a refused login only through error_cb (as `_AUTHENTICATION`, not
    fatal) and keeps reconnecting, so the request itself merely times out. `then`, when
    given, receives every error too. Thread-safe; never raises.
    """

    def __init__(self, then: Callable[[Any], None] | None = None) -> None:
        self._then = then
        self._lock = threading.Lock()
        self._failure: str | None = None

    def __call__(self, err: _ClientError) -> None:
        if err.name() in AUTHENTICATION_ERRORS:
            with self._lock:
                self._failure = err.str()
        if self._then is not None:
            self._then(err)

    @property
    def failure(self) -> str | None:
        """librdkafka's message for the last authentication failure, or None."""
        with self._lock:
            return self._failure

    def clear(self) -> None:
        """Forget the failure: the broker answered since (its credentials were fixed), so
        a later timeout must not be blamed on the old failure."""
        with self._lock:
            self._failure = None

    def raise_if_failed(self, common: CommonSettings | str) -> None:
        """Raise KafkaAuthenticationFailed, naming the settings to check, when the broker
        refused the credentials."""
        failure = self.failure
        if failure is not None:
            raise KafkaAuthenticationFailed(
                f"Kafka at {describe(common)} refused the connection: {failure}. Check "
                "KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )

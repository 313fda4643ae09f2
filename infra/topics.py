"""Local-stack helper: wait for a Kafka broker and create the pipeline's topics.

    python infra/topics.py wait   [--bootstrap HOST:PORT] [--timeout S]
    python infra/topics.py ensure [--bootstrap HOST:PORT] [--topic NAME] [--partitions N]
    python infra/topics.py scram-user --username NAME [--bootstrap HOST:PORT]

`ensure` creates the event topic and its dead-letter topic (`<topic>.dlq`) when they are
missing and leaves existing ones untouched. Defaults come from the same environment
variables the services read (KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC, KAFKA_TOPIC_PARTITIONS,
and KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_CA_LOCATION for a secured cluster).

`scram-user` creates (or updates) a SCRAM-SHA-512 user whose password is read from
LOCAL_KAFKA_SASL_PASSWORD, so it never shows on a command line; infra/kafka.sh uses it
for the local broker's SASL listener.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from shared.config import CommonSettings, declared
from shared.errors import ConfigError
from shared.kafka import AuthenticationWatch, client_config

# Kafka's own default for new SCRAM credentials (and the minimum it accepts is 4096).
SCRAM_ITERATIONS = 8192


def wait_for_broker(connection: CommonSettings | str, timeout: float) -> bool:
    """Return True once the broker answers a metadata request, False after `timeout` s.
    `connection` is the settings of a secured cluster, or a bootstrap address reached over
    PLAINTEXT. Raises KafkaAuthenticationFailed at once when the broker refuses the
    credentials: waiting longer cannot help."""
    watch = AuthenticationWatch()
    admin = AdminClient(client_config(connection, {"log_level": 0, "error_cb": watch}))
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(0.2, min(1.0, remaining)))
            return True
        except KafkaException:
            admin.poll(0)  # serves error_cb
            watch.raise_if_failed(connection)
            if remaining <= 0:
                return False
            time.sleep(0.2)


def ensure_topics(
    connection: CommonSettings | str, names: Sequence[str], partitions: int
) -> list[str]:
    """Create each missing topic with `partitions` partitions; return the ones created.

    A topic that already exists is left alone, even with another partition count.
    """
    admin = AdminClient(client_config(connection))
    existing = admin.list_topics(timeout=10).topics
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    # The replication factor is the broker's `default.replication.factor`: 1 on the local
    # single-node broker, and whatever a real cluster's operators chose (with
    # min.insync.replicas, it decides what acks=all is worth).
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions) for n in missing],
        operation_timeout=10,
        request_timeout=15,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    # Creation is acknowledged before every partition has a leader; wait for them so a
    # producer started right after does not see "unknown partition".
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(
            n in topics
            and topics[n].error is None
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            break
        time.sleep(0.1)
    return created


def upsert_scram_user(
    connection: CommonSettings | str, username: str, password: str, timeout: float = 15.0
) -> None:
    """Create the SCRAM-SHA-512 credential of `username`, or replace its password.
    Raises KafkaException when the broker refuses."""
    admin = AdminClient(client_config(connection))
    upsert = UserScramCredentialUpsertion(
        username,
        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
        password.encode(),
    )
    futures = admin.alter_user_scram_credentials([upsert], request_timeout=timeout)
    for future in futures.values():
        future.result()


def _partitions(raw: str) -> int:
    """argparse type of --partitions: the bounds of KAFKA_TOPIC_PARTITIONS, read by its own
    declaration (argparse names the option in front of the message)."""
    spec = next(s for f, s in declared(CommonSettings) if f.name == "kafka_topic_partitions")
    option = dataclasses.replace(spec, env="--partitions")
    try:
        value: int = option.read({option.env: raw}, int, 0)
        return value
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status is 0 on success, 1 when the broker does not answer
    in time, 2 on a bad argument or environment variable (its name in the message)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["wait", "ensure", "scram-user"])
    parser.add_argument("--bootstrap", help="default: KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--topic", help="default: KAFKA_TOPIC, else user-activity-events")
    parser.add_argument(
        "--partitions", type=_partitions, help="default: KAFKA_TOPIC_PARTITIONS, else 6"
    )
    parser.add_argument("--username", help="scram-user: the user to create or update")
    args = parser.parse_args(argv)
    try:
        # The environment is read (and checked) here, so a bad value of any variable the
        # services read ends in one line naming it, not a traceback.
        common = CommonSettings.from_env()
        if args.bootstrap is not None:
            common = dataclasses.replace(common, kafka_bootstrap_servers=args.bootstrap)
        if args.command == "scram-user":
            password = os.environ.get("LOCAL_KAFKA_SASL_PASSWORD", "")
            if not args.username or not password:
                raise ConfigError("scram-user needs --username and LOCAL_KAFKA_SASL_PASSWORD")
            upsert_scram_user(common, args.username, password, args.timeout)
            return 0
        if args.command == "wait":
            return 0 if wait_for_broker(common, args.timeout) else 1
        if not wait_for_broker(common, args.timeout):
            print(
                f"[topics] no Kafka broker answers at {common.kafka_bootstrap_servers}",
                file=sys.stderr,
            )
            return 1
    except ConfigError as exc:
        print(f"[topics] {exc}", file=sys.stderr)
        return 2
    topic = args.topic or common.kafka_topic
    partitions = args.partitions or common.kafka_topic_partitions
    created = ensure_topics(common, [topic, f"{topic}.dlq"], partitions)
    for name in created:
        print(f"[topics] created {name} ({partitions} partitions)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

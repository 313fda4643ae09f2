"""pipeline-admin's Kafka plumbing: its error, its client settings and the check that a
topic exists, shared by the scan and the replay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import TopicMetadata  # type: ignore[attr-defined]

from consumer_service.topics import TopicMissing, topic_metadata
from shared.config import CommonSettings
from shared.errors import PipelineError, Unavailable
from shared.kafka import AuthenticationWatch, client_config, describe


class AdminError(PipelineError):
    """The tool cannot do what was asked (a topic is missing, Kafka refused); exit 1."""


def kafka_config(
    connection: CommonSettings | str, role: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The client settings of `connection` plus `role`, with librdkafka's own log cut
    down to critical messages."""
    return client_config(
        connection,
        {
            # Our own Kafka errors are reported in plain words; librdkafka's retries of an
            # unreachable broker would otherwise flood the terminal.
            "log_level": 2,
            **(role or {}),
        },
    )


def existing_topic(
    client: Any,
    connection: CommonSettings | str,
    watch: AuthenticationWatch,
    timeout: float,
    topic: str,
    *,
    missing: str,
    need_partitions: bool = False,
) -> TopicMetadata:
    """`topic_metadata` in the tool's terms: raises AdminError(`missing`) when the topic
    is not there, Unavailable when Kafka does not answer in time, and
    KafkaAuthenticationFailed (at once) when it refuses the credentials."""
    try:
        return topic_metadata(
            client, connection, watch, timeout, topic, need_partitions=need_partitions
        )
    except TopicMissing:
        raise AdminError(missing) from None
    except KafkaException as exc:
        raise Unavailable(f"Kafka at {describe(connection)} did not answer: {exc}") from exc

"""Making sure the dead-letter topic exists before the first poison record needs it, and
asking the broker for metadata in a way that tells a refused login from a broker away
(`metadata`), or from a topic that is not there (`topic_metadata`).

The broker does not auto-create topics, and a DLQ that appears only when the first
poison record shows up would turn that record into a retry loop. The event topic itself
is created by deployment (infra/topics.py), not by consumers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ClusterMetadata,
    TopicMetadata,
)
from confluent_kafka.cimpl import NewTopic

from shared.config import CommonSettings
from shared.errors import PipelineError, Unavailable
from shared.kafka import AuthenticationWatch, client_config, describe

log = logging.getLogger(__name__)

# Metadata is asked for in slices this long: librdkafka reports a refused login only
# through error_cb, served between two slices, while the request itself just times out.
METADATA_SLICE_SECONDS = 1.0


def metadata(
    client: Any,
    connection: CommonSettings | str,
    watch: AuthenticationWatch,
    timeout: float,
    topic: str | None = None,
) -> ClusterMetadata:
    """`client.list_topics(topic)` (an AdminClient, Producer or Consumer whose `error_cb`
    is `watch`), waiting up to `timeout` seconds in all. Raises KafkaAuthenticationFailed
    as soon as the broker refused the credentials, and KafkaException when it did not
    answer in time. Serves the client's callbacks with `poll(0)`: a Consumer must have
    no assignment yet."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            found = client.list_topics(
                topic, timeout=max(0.1, min(METADATA_SLICE_SECONDS, remaining))
            )
        except KafkaException:
            client.poll(0)
            watch.raise_if_failed(connection)
            if deadline - time.monotonic() <= 0:
                raise
            continue
        watch.clear()
        cluster: ClusterMetadata = found
        return cluster


class TopicMissing(PipelineError):
    """The broker answered, but holds no usable topic of that name (none at all, one it
    reports an error for, or, where the caller needs them, one without partitions yet)."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic} is not available")
        self.topic = topic


def topic_metadata(
    client: Any,
    connection: CommonSettings | str,
    watch: AuthenticationWatch,
    timeout: float,
    topic: str,
    *,
    need_partitions: bool = False,
) -> TopicMetadata:
    """The metadata of `topic`, asked for as `metadata` does (same arguments, same
    KafkaAuthenticationFailed and KafkaException). Raises TopicMissing when the broker
    answered without `topic` (the broker does not auto-create topics, so every caller
    must say so instead of working on nothing), and with `need_partitions` also when the
    topic has none yet (it is still being created): a reader that assigns them needs them."""
    cluster = metadata(client, connection, watch, timeout, topic)
    found: TopicMetadata | None = cluster.topics.get(topic)
    if found is None or found.error is not None or (need_partitions and not found.partitions):
        raise TopicMissing(topic)
    return found


def ensure_dlq_topic(
    connection: CommonSettings | str,
    source_topic: str,
    dlq_topic: str,
    partitions: int,
    timeout: float = 10.0,
) -> bool:
    """Create `dlq_topic` when missing, with as many partitions as the source topic has
    (or `partitions` when the source does not exist yet). True when it was created.
    `connection` is the Kafka settings (a bare bootstrap address means PLAINTEXT).
    Raises Unavailable when the broker does not answer in time, KafkaAuthenticationFailed
    (a ConfigError: retrying cannot help) when it refuses the credentials."""
    watch = AuthenticationWatch()
    admin = AdminClient(client_config(connection, {"error_cb": watch}))
    try:
        topics = metadata(admin, connection, watch, timeout).topics
    except KafkaException as exc:
        raise Unavailable(f"Kafka at {describe(connection)} did not answer: {exc}") from exc
    if dlq_topic in topics:
        return False
    source = topics.get(source_topic)
    count = len(source.partitions) if source is not None and source.partitions else partitions
    futures = admin.create_topics(
        [NewTopic(dlq_topic, num_partitions=count, replication_factor=-1)],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    try:
        futures[dlq_topic].result()
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False  # another replica won the race
        raise Unavailable(f"could not create {dlq_topic}: {exc}") from exc
    log.info("created the dead-letter topic", extra={"topic": dlq_topic, "partitions": count})
    return True

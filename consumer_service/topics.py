"""Making sure the dead-letter topic exists before the first poison record needs it.

The broker does not auto-create topics, and a DLQ that appears only when the first
poison record shows up would turn that record into a retry loop. The event topic itself
is created by deployment (infra/topics.py), not by consumers.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from shared.errors import Unavailable

log = logging.getLogger(__name__)


def ensure_dlq_topic(
    bootstrap: str, source_topic: str, dlq_topic: str, partitions: int, timeout: float = 10.0
) -> bool:
    """Create `dlq_topic` when missing, with as many partitions as the source topic has
    (or `partitions` when the source does not exist yet). True when it was created.
    Raises Unavailable when the broker does not answer in time."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise Unavailable(f"Kafka did not answer: {exc}") from exc
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

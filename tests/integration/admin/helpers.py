"""Helpers for the pipeline-admin tests: the tool run in-process, a DLQ filled directly
with the worker's own dlq.* headers, and readers independent of the tool under test."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from consumer_service.admin.cli import main
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.dlq import DeadLetter, dlq_headers

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def admin(settings: ConsumerSettings, *args: str, **env: str) -> Run:
    """`pipeline-admin <args>` in-process, in the environment the services would have."""
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.common.kafka_bootstrap_servers,
        "KAFKA_TOPIC": settings.common.kafka_topic,
        **env,
    }
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), env=environ, out=out, err=err)
    return Run(code, out.getvalue(), err.getvalue())


def now_ms() -> int:
    return int(time.time() * 1000)


def dead_letter(
    settings: ConsumerSettings,
    letters: Sequence[DeadLetter],
    timestamps: Sequence[int | None] | None = None,
) -> None:
    """Produce `letters` to the DLQ exactly as the worker does (its dlq_headers)."""
    producer = Producer(
        {
            "bootstrap.servers": settings.common.kafka_bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    for i, letter in enumerate(letters):
        ts = timestamps[i] if timestamps is not None else None
        producer.produce(
            settings.dlq_topic,
            key=letter.key,
            value=letter.value,
            headers=dlq_headers(letter, settings.consumer_group),
            **({"timestamp": ts} if ts is not None else {}),
        )
    assert producer.flush(15) == 0


def letter(
    value: bytes | None,
    reason: str = "invalid_schema",
    *,
    key: bytes | None = b"user-1",
    headers: tuple[tuple[str, bytes], ...] = (),
    partition: int = 0,
    offset: int = 0,
    source: str = "src",
) -> DeadLetter:
    return DeadLetter(key, value, headers, reason, f"why: {reason}", source, partition, offset)


def end_offsets(settings: ConsumerSettings, topic: str) -> dict[int, int]:
    """High watermark per partition."""
    c = Consumer({"bootstrap.servers": settings.common.kafka_bootstrap_servers, "group.id": "x"})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        c.close()


def count(settings: ConsumerSettings, topic: str) -> int:
    return sum(end_offsets(settings, topic).values())


def read_all(settings: ConsumerSettings, topic: str) -> list[Any]:
    """Every record of `topic` now (a fresh test topic: all start at offset 0)."""
    ends = {p: h for p, h in end_offsets(settings, topic).items() if h > 0}
    c = Consumer(
        {
            "bootstrap.servers": settings.common.kafka_bootstrap_servers,
            "group.id": "x",
            "enable.auto.commit": False,
        }
    )
    out: list[Any] = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + 20
        while len(out) < sum(ends.values()) and time.monotonic() < deadline:
            for msg in c.consume(100, 0.2):
                if msg.error() is None:
                    out.append(msg)
    finally:
        c.close()
    assert len(out) == sum(ends.values())
    return out

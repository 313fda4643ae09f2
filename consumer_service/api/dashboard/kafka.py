"""The dashboard's Kafka figures: the topic's watermarks and the consumer group's offsets
and members, asked of the broker with an AdminClient and cached per process.

The figures cost five broker round trips, so each API process keeps them for
KAFKA_CACHE_SECONDS and fetches them for one request at a time: any number of open pages
and refreshes cost the broker at most one fetch per process per interval. Each snapshot
carries the time it was taken, so a page differences high watermarks over the right
interval whichever process and cache answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka import admin as kafka_admin
from confluent_kafka.admin import AdminClient

from consumer_service.config import ConsumerSettings
from consumer_service.topics import TopicMissing, topic_metadata
from shared.kafka import AuthenticationWatch, KafkaAuthenticationFailed, client_config

KAFKA_TIMEOUT_SECONDS = 1.5
# A snapshot's `summary` of its error.
KAFKA_REFUSED = "Kafka refused the connection (authentication failed)."
KAFKA_SILENT = "Kafka did not answer."
TOPIC_MISSING = "The topic is not available."
KAFKA_CACHE_SECONDS = 2.0

# Plain value objects, shareable by every call. confluent-kafka's type hints do not
# export OffsetSpec, hence the ignores.
LATEST = kafka_admin.OffsetSpec.latest()  # type: ignore[attr-defined, no-untyped-call]
EARLIEST = kafka_admin.OffsetSpec.earliest()  # type: ignore[attr-defined, no-untyped-call]


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    high_watermark: int
    committed: int | None
    lag: int


@dataclass(frozen=True)
class GroupMember:
    client_id: str
    host: str | None
    partitions: tuple[int, ...]


@dataclass(frozen=True)
class KafkaSnapshot:
    """The topic and group as the broker saw them at `sampled_at` (Unix seconds); on
    failure only `error`, `summary` and `sampled_at` are set. `summary` says what went
    wrong in fixed words, naming no broker address, user or broker message: what a
    reader without credentials is told."""

    sampled_at: float
    error: str | None = None
    summary: str | None = None
    produced: int | None = None
    group_state: str | None = None
    partitions: tuple[PartitionLag, ...] = ()
    members: tuple[GroupMember, ...] = ()


class KafkaGroupView:
    """The topic's watermarks and the group's offsets and members, cached.

    `snapshot()` never raises for Kafka trouble and blocks for at most about
    2 x KAFKA_TIMEOUT_SECONDS (plus the wait for another thread's fetch). A failed fetch
    is cached like a good one, so a broker that does not answer costs each page one
    timeout per interval, not one per request."""

    def __init__(
        self,
        settings: ConsumerSettings,
        timeout_seconds: float = KAFKA_TIMEOUT_SECONDS,
        cache_seconds: float = KAFKA_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._timeout = timeout_seconds
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        # The requests of the last snapshot: one that timed out may still be in flight.
        self._requests: list[Future[Any]] = []
        self._auth = AuthenticationWatch()
        self._cached: KafkaSnapshot | None = None
        self._cached_at = 0.0

    def snapshot(self) -> KafkaSnapshot:
        with self._lock:
            if self._cached is None or self._clock() - self._cached_at >= self._cache_seconds:
                self._cached = self._fetch()
                self._cached_at = self._clock()
            return self._cached

    def close(self) -> None:
        """Drop the AdminClient in the calling thread, once its requests have answered.
        Left to the garbage collector, a client in a reference cycle may be destroyed on
        a librdkafka thread running a callback, which aborts the process. Destroyed while
        a request is in flight (one that timed out here, on a broker still electing its
        group coordinator, say), its background thread later answers into freed memory
        and the process dies of a segmentation fault: a client whose requests do not
        answer in time is kept, never destroyed."""
        with self._lock:
            admin, self._admin = self._admin, None
            requests, self._requests = self._requests, []
        if admin is not None and wait(requests, timeout=self._timeout + 1).not_done:
            _OUTLIVED.append(admin)

    def _client(self) -> AdminClient:
        if self._admin is None:
            # Created on first use: gunicorn forks its workers after importing the app.
            self._admin = AdminClient(
                client_config(self._settings.common, {"error_cb": self._auth})
            )
        return self._admin

    def _fetch(self) -> KafkaSnapshot:
        sampled_at = time.time()
        try:
            return self._ask(sampled_at)
        except KafkaAuthenticationFailed as exc:
            return KafkaSnapshot(sampled_at, error=str(exc), summary=KAFKA_REFUSED)
        except (KafkaException, TimeoutError) as exc:
            error = f"Kafka did not answer: {exc or 'timeout'}"
            return KafkaSnapshot(sampled_at, error=error, summary=KAFKA_SILENT)

    def _ask(self, sampled_at: float) -> KafkaSnapshot:
        admin = self._client()
        topic = self._settings.common.kafka_topic
        group = self._settings.consumer_group
        t = self._timeout
        try:
            found = topic_metadata(admin, self._settings.common, self._auth, t, topic)
        except TopicMissing as exc:
            return KafkaSnapshot(sampled_at, error=str(exc), summary=TOPIC_MISSING)
        tps = [TopicPartition(topic, p) for p in sorted(found.partitions)]
        # All four requested before any is awaited: they run side by side.
        latest = admin.list_offsets({tp: LATEST for tp in tps}, request_timeout=t)
        earliest = admin.list_offsets({tp: EARLIEST for tp in tps}, request_timeout=t)
        offsets = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, tps)], request_timeout=t
        )[group]
        described = admin.describe_consumer_groups([group], request_timeout=t)[group]
        self._requests = [*latest.values(), *earliest.values(), offsets, described]
        wait = t + 0.5
        high = {tp.partition: int(f.result(timeout=wait).offset) for tp, f in latest.items()}
        low = {tp.partition: int(f.result(timeout=wait).offset) for tp, f in earliest.items()}
        committed: dict[int, int] = {
            tp.partition: int(tp.offset)
            for tp in offsets.result(timeout=wait).topic_partitions
            if tp.offset >= 0
        }
        description = described.result(timeout=wait)
        return KafkaSnapshot(
            sampled_at,
            produced=sum(high.values()),
            group_state=description.state.name.lower(),
            partitions=_lags(high, low, committed),
            members=_members(description, topic),
        )


# AdminClients closed while a request was still in flight (see KafkaGroupView.close).
_OUTLIVED: list[AdminClient] = []


def _lags(
    high: Mapping[int, int], low: Mapping[int, int], committed: Mapping[int, int]
) -> tuple[PartitionLag, ...]:
    partitions = []
    for p in sorted(high):
        done = committed.get(p)
        # Records below the low watermark are gone: they can never be consumed.
        start = low.get(p, 0) if done is None else max(done, low.get(p, 0))
        partitions.append(PartitionLag(p, high[p], done, max(0, high[p] - start)))
    return tuple(partitions)


def _members(description: Any, topic: str) -> tuple[GroupMember, ...]:
    """The group's members with their partitions of `topic`, by first partition."""
    members = sorted(
        (
            GroupMember(
                client_id=str(m.client_id),
                host=str(m.host).lstrip("/"),
                partitions=tuple(
                    sorted(
                        tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic
                    )
                ),
            )
            for m in description.members
        ),
        key=lambda m: (m.partitions[:1], m.client_id),
    )
    return tuple(members)

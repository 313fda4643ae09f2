"""The consumer group's rebalance callbacks. They hold no state: each delegates to the
owners (`Offsets`, `Flight`, `LoginWatch`, `Health`).

librdkafka runs them inside consume(), poll() and close(), on the main thread, so while
a store may be in flight: revoke and lost first wait for every store in flight, so no
store of this member writes a leaving partition's records after the callback returned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Consumer, TopicPartition

from consumer_service.pipeline.batch import TP
from consumer_service.pipeline.flight import Flight
from consumer_service.pipeline.health import Health
from consumer_service.pipeline.login import LoginWatch
from consumer_service.pipeline.offsets import Offsets

log = logging.getLogger(__name__)


class Rebalance:
    """`on_assign`, `on_revoke` and `on_lost` for `Consumer.subscribe`."""

    def __init__(self, offsets: Offsets, flight: Flight, login: LoginWatch, health: Health) -> None:
        self._offsets = offsets
        self._flight = flight
        self._login = login
        self._health = health

    def on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group answered: the partitions are ours, and a refused login is over.
        "running" from the first assignment on (ready means events are being consumed,
        not just polled for)."""
        self._offsets.assign(_tps(partitions))
        self._login.accepted()
        if self._health.state == "joining":
            self._health.set("running")
        log.info(
            "partitions assigned",
            extra={"partitions": _names(partitions), "assigned": len(self._offsets.assigned)},
        )

    def on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Everything durable for these partitions, the stores in flight included once
        they answered, is committed, and confirmed, before they go: the next owner starts
        from there."""
        revoked = _tps(partitions)
        self._settle_flight()
        self._offsets.commit(only=revoked)
        self._forget(revoked)
        log.info(
            "partitions revoked",
            extra={"partitions": _names(partitions), "assigned": len(self._offsets.assigned)},
        )

    def on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Someone else may own them already: committing now could go backwards. The
        stores in flight are waited for, so none of ours writes their records after this."""
        self._settle_flight()
        self._forget(_tps(partitions))
        log.warning("partitions lost", extra={"partitions": _names(partitions)})

    def _settle_flight(self) -> None:
        for batch, _result in self._flight.answered():
            self._offsets.mark_durable(batch)

    def _forget(self, tps: set[TP]) -> None:
        self._offsets.forget(tps)
        self._flight.revoke(tps)


def _tps(partitions: Sequence[TopicPartition]) -> set[TP]:
    return {(tp.topic, tp.partition) for tp in partitions}


def _names(partitions: Sequence[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]

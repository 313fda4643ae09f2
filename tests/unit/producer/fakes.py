"""An in-memory `EventPublisher` for unit tests; it passes the same contract tests as the
Kafka one (see contract.py), so tests written against it mean the same thing."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from producer_service.delivery import REASON_TIMEOUT, Delivery
from producer_service.publisher import Readiness, encode_records
from shared.errors import Unavailable
from shared.events import event_key
from shared.json_codec import compact_json


class InMemoryEventPublisher:
    """Keeps acknowledged records in `records`. `fail` maps a record's position in a
    `publish` call to the reason it is not acknowledged; `fail_all` fails every record."""

    def __init__(self, partitions: int = 6) -> None:
        self.partitions = partitions
        self.records: list[dict[str, Any]] = []
        self.offsets = [0] * partitions
        self.fail: dict[int, str] = {}
        self.fail_all: str | None = None
        self.is_ready = True
        self.not_ready_reason = "fake: not ready"
        self.not_ready_state = "unreachable"
        self.closed = False
        self._lock = threading.Lock()

    def publish(
        self,
        records: Sequence[Mapping[str, Any]],
        timeout: float,
        values: Sequence[bytes] | None = None,
    ) -> list[Delivery]:
        if self.closed:
            raise Unavailable("the publisher is closed")
        encode_records(records, values)  # the same all-or-nothing check as the Kafka publisher
        if values is not None:
            # A caller's pre-encoded value must be exactly what the record encodes to.
            assert list(values) == [compact_json(r) for r in records]
        out = []
        with self._lock:
            for index, record in enumerate(records):
                reason = self.fail_all or self.fail.get(index)
                if reason is not None:
                    out.append(Delivery(record["eventId"], reason=reason, error=f"fake {reason}"))
                    continue
                partition = zlib.crc32(event_key(record).encode()) % self.partitions
                offset = self.offsets[partition]
                self.offsets[partition] += 1
                self.records.append(dict(record))
                out.append(Delivery(record["eventId"], partition, offset, latency=0.001))
        return out

    def ready(self, timeout: float) -> Readiness:
        if self.closed:
            return Readiness(False, "the publisher is closed", "closed")
        if self.is_ready:
            return Readiness(True)
        return Readiness(False, self.not_ready_reason, self.not_ready_state)

    def close(self, timeout: float) -> int:
        self.closed = True
        return 0


__all__ = ["REASON_TIMEOUT", "InMemoryEventPublisher"]

"""What every store shares: the `EventStore` contract, its values and errors, and
`RedisStore`, the base both Redis backends build on (the store script's arguments, the
stats view, decoding). The backends (`single`, `cluster`) subclass it; neither knows the
other."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from consumer_service.pipeline.processing import Accepted
from consumer_service.storage.durability import Durability
from consumer_service.storage.erase import Erasure
from consumer_service.storage.keys import KeyLayout
from consumer_service.storage.script import (
    DUPLICATE,
    ERASED,
    EVICT_BASE,
    EVICT_PER_STORED,
    REDELIVERED,
    event_blobs,
)
from shared.errors import PipelineError, Unavailable
from shared.events import event_key

# A page's default bounds (the read API passes its settings): index entries examined,
# and the bytes of stored bodies after which it ends.
MAX_SCAN = 5000
MAX_PAGE_BYTES = 1024 * 1024


# How long an erasure record lives by default: 30 days, past the 21 days a copy of an
# erased event can be replayed with Kafka's default retention (7 days in the topic, 7 in
# the dead-letter topic, 7 more in the topic after a DLQ replay).
ERASURE_TTL_SECONDS = 30 * 24 * 3600


# Runs a function with a Redis client (single node) or the cluster client; a failure
# comes out as the store's own error for it.
Run = Callable[[Callable[[Any], Any]], Any]


class StoreFenced(PipelineError):
    """The store wrote nothing because the batch before it (`Chain.after`) is not
    stored yet: send it again once that one is."""


class StoreRefused(Unavailable):
    """Redis answered but refused the store script: a key of the wrong type under the
    prefix (the message names it), out of memory, a read-only replica. Transient as far
    as the caller is concerned (retry, commit nothing), but it lasts until an operator
    acts, so it deserves an error in the log, not a warning."""


@dataclass(frozen=True)
class Chain:
    """Where a batch stands in its writer's sequence, for a store that accepts a batch
    while the one before it is still in flight (`max_in_flight` > 1).

    `writer` names one worker run (unique, never reused), `number` counts its batches
    from 1, and `after` is the number of the batch that must be stored before this one
    may write anything, or 0 when none is outstanding. Redis may run two calls sent on
    two connections in either order; the check makes the order of what is stored the
    order of the batches anyway."""

    writer: str
    number: int
    after: int = 0


@dataclass(frozen=True)
class BatchResult:
    """What one store_batch did, per accepted event in input order."""

    stored: tuple[Accepted, ...]
    duplicates: tuple[Accepted, ...]
    redelivered: tuple[Accepted, ...]
    # Events of an erased user from before the erasure: dropped, never stored.
    erased: tuple[Accepted, ...] = ()

    @classmethod
    def from_codes(cls, events: Sequence[Accepted], codes: Sequence[int]) -> BatchResult:
        """The events sorted by the store script's answer for each (script.py's names)."""
        stored: list[Accepted] = []
        dupes: list[Accepted] = []
        again: list[Accepted] = []
        erased: list[Accepted] = []
        for ev, code in zip(events, codes, strict=True):
            if code == DUPLICATE:
                dupes.append(ev)
            elif code == REDELIVERED:
                again.append(ev)
            elif code == ERASED:
                erased.append(ev)
            else:
                stored.append(ev)
        return cls(tuple(stored), tuple(dupes), tuple(again), tuple(erased))


@dataclass(frozen=True)
class PageQuery:
    """One page of stored events. `since` (inclusive) and `until` (exclusive) are
    timestamps in the shared format, so they compare as strings. `cursor` is opaque: 0
    for the first page, then the `next_cursor` the same kind of store returned (an int
    from the single-node store, a string from the cluster store)."""

    limit: int = 100
    cursor: int | str = 0
    user_id: str | None = None
    event_type: str | None = None
    since: str | None = None
    until: str | None = None
    schema_version: int | None = None

    def matches(self, event: Mapping[str, Any]) -> bool:
        """True when the stored `event` passes every filter of the query."""
        # An anonymous event (version 2) is in the user index under its anonymousId.
        if self.user_id is not None and event_key(event) != self.user_id:
            return False
        if self.event_type is not None and event.get("eventType") != self.event_type:
            return False
        if self.schema_version is not None and event.get("schemaVersion") != self.schema_version:
            return False
        ts = str(event.get("timestamp", ""))
        if self.since is not None and ts < self.since:
            return False
        return not (self.until is not None and ts >= self.until)


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    total: int
    next_cursor: int | str | None


class EventStore(Protocol):
    """Storage of processed events. Every method raises `Unavailable` when the backend
    does not answer, and nothing else for backend trouble."""

    # How many store_batch calls a worker may have running at once: more than one only
    # where the store honours a `Chain`.
    max_in_flight: int

    # False: a page cursor is the last sequence number read, digits that the read API's
    # query schema checks. True: it is a token only `parse_cursor` can check.
    opaque_cursor: bool

    def store_batch(
        self,
        events: Sequence[Accepted],
        processed_at: str,
        dead_lettered: Mapping[str, int] | None = None,
        chain: Chain | None = None,
    ) -> BatchResult:
        """For each event in order: store it with its indexes and mark its eventId seen,
        or count it as a duplicate (another record had the id) or a redelivery (this very
        record was stored before), or drop it as erased (its user's erasure record covers
        its timestamp: `erase_user`). Also adds `dead_lettered` counts per reason. One round
        trip; all of it is durable when this returns. When it raises, a prefix of the
        batch may be stored, but an event is only ever marked seen once fully stored, so
        calling again with the same batch completes it: the events stored before come
        back as redelivered, the rest are stored, nothing twice. Raises `StoreRefused`
        (an `Unavailable`) when the backend answered but refused.

        With a `chain` (only where `max_in_flight` > 1), the call may run while the
        batch before it is in flight; it raises `StoreFenced`, having written nothing,
        when that batch (`chain.after`) is not stored yet."""
        ...

    def get(self, event_id: str) -> dict[str, Any] | None:
        """The stored form of one event, or None."""
        ...

    def parse_cursor(self, token: str) -> int | str:
        """The `PageQuery.cursor` that `token` (a `next_cursor` of this kind of store, as
        text) stands for. Raises ValueError when it is not one. Asks nothing of Redis."""
        ...

    def page(
        self, query: PageQuery, max_scan: int = MAX_SCAN, max_bytes: int = MAX_PAGE_BYTES
    ) -> Page:
        """Events after `query.cursor` in processing order, filtered. Examines at most
        `max_scan` index entries (page_read.py: what the indexes decide costs no body),
        and ends after the event that brings the bodies it returns to `max_bytes` or
        more; either way the page may be short with `next_cursor` still set. A time
        window holding no event costs a few commands, whatever the store holds."""
        ...

    def stats(self) -> dict[str, Any]:
        """Totals: processed, duplicatesSkipped, erasedDropped, deadLettered (and by
        reason), stored, byEventType."""
        ...

    def ping(self) -> bool:
        """True when the backend answers."""
        ...

    def erase_user(self, user_id: str) -> Erasure:
        """Delete every stored event of `user_id` with its index entries, and record the
        erasure so that no event of the user with a `timestamp` at or before its cutoff
        (Redis's clock when it began) is ever stored again while the record lives; what
        was deleted (0 for a user with none) and the cutoff. Deletes exactly the user's
        events with a timestamp at or before the cutoff: a later one stays, also one
        stored while it runs. Done in steps of a bounded size, each atomic, the first one
        writing the record with its deletions. Erasing again is safe and moves the cutoff
        forward."""
        ...


class RedisStore(EventStore):
    """The part of an `EventStore` on Redis that both backends share: the settings of
    the store script, its arguments, and the totals view of the stats hashes."""

    def __init__(
        self,
        prefix: str,
        dedup_ttl_seconds: int,
        retention_max_events: int = 0,
        retention_max_age_seconds: int = 0,
        erasure_ttl_seconds: int = ERASURE_TTL_SECONDS,
    ) -> None:
        self._prefix = prefix
        self._erasure_ttl = erasure_ttl_seconds
        self._dedup_ttl = dedup_ttl_seconds
        self._max_events = retention_max_events
        self._max_age = retention_max_age_seconds

    @abstractmethod
    def durability(self) -> Durability:
        """What Redis says about its persistence and eviction (CONFIG GET); never
        raises."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    @abstractmethod
    def layouts(self) -> list[tuple[Run, KeyLayout]]:
        """Every single-node key layout of the store (one, or one per registered
        partition of a cluster), each with what runs reads and writes in it."""

    def _script_args(
        self,
        prefix: str,
        events: Sequence[Accepted],
        processed_at: str,
        dead: Mapping[str, int],
        chain: Chain | None,
    ) -> list[str | bytes | int]:
        """The store script's ARGV for `events` under `prefix` (a partition's tag on a
        cluster), in the order of the layout at the top of store_batch.lua."""
        args: list[str | bytes | int] = [
            prefix,
            self._dedup_ttl,
            self._max_events,
            self._max_age,
            EVICT_BASE,
            EVICT_PER_STORED,
            *((chain.writer, chain.number, chain.after) if chain else ("", 0, 0)),
            len(dead),
        ]
        for reason, n in dead.items():
            args += [reason, n]
        return [*args, *event_blobs(events, processed_at)]

    @staticmethod
    def _totals(fields: Mapping[str, int], stored: int) -> dict[str, Any]:
        """`stats()` from the counters of the stats hashes (summed when several) and the
        number of events in the index."""
        return {
            "processed": fields.get("processed", 0),
            "duplicatesSkipped": fields.get("duplicates", 0),
            "erasedDropped": fields.get("erased", 0),
            "deadLettered": fields.get("deadLettered", 0),
            "deadLetteredByReason": {
                k.split(":", 1)[1]: v
                for k, v in sorted(fields.items())
                if k.startswith("deadLettered:")
            },
            "stored": stored,
            "byEventType": {
                k.split(":", 1)[1]: v for k, v in sorted(fields.items()) if k.startswith("type:")
            },
        }


def decode_event(body: bytes) -> dict[str, Any]:
    """A stored event from the JSON body the store script wrote."""
    value: dict[str, Any] = json.loads(body)
    return value

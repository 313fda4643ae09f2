"""A page of the cluster store: every partition's index read in its own order and the
heads merged, and the cursor that says where each partition's reading stopped."""

from __future__ import annotations

import base64
import binascii
import heapq
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumer_service.storage.base import MAX_PAGE_BYTES, PageQuery, decode_event
from consumer_service.storage.cluster_nodes import ClusterNodes
from consumer_service.storage.keys import ClusterKeyLayout
from consumer_service.storage.page_read import BODY_CHUNK, IndexReader, ScanBudget

CURSOR_PREFIX = "v1."
_CURSOR_BODY = re.compile(r"^[A-Za-z0-9_-]{1,8000}$")
_CURSOR_ENTRY = re.compile(r"^([0-9]{1,9}):([0-9]{1,18})$")


def encode_cursor(positions: Mapping[int, int]) -> str:
    """The opaque form of per-partition positions (the last seq read in each)."""
    text = ",".join(f"{p}:{s}" for p, s in sorted(positions.items()) if s > 0)
    return CURSOR_PREFIX + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> dict[int, int]:
    """Positions from a cursor `encode_cursor` made; ValueError for anything else."""
    if not token.startswith(CURSOR_PREFIX):
        raise ValueError("Not a valid cursor.")
    body = token[len(CURSOR_PREFIX) :]
    if body == "":
        return {}
    if not _CURSOR_BODY.match(body):
        raise ValueError("Not a valid cursor.")
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("Not a valid cursor.") from exc
    positions: dict[int, int] = {}
    for entry in text.split(",") if text else ():
        found = _CURSOR_ENTRY.match(entry)
        if found is None:
            raise ValueError("Not a valid cursor.")
        positions[int(found[1])] = int(found[2])
    if encode_cursor(positions) != token:  # one spelling per position vector
        raise ValueError("Not a valid cursor.")
    return positions


def cursor_positions(cursor: int | str) -> dict[int, int]:
    """The per-partition positions a `PageQuery.cursor` of the cluster store stands for;
    ValueError for anything else."""
    if isinstance(cursor, str):
        return decode_cursor(cursor)
    if cursor == 0:
        return {}
    raise ValueError("Not a valid cursor.")


@dataclass
class _Head:
    """One partition's unread candidates during a page: (seq, eventId, body)."""

    reader: IndexReader
    position: int
    rows: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    # Entries up to here were examined; those not among `rows` do not match.
    reached: int = 0
    done: bool = False


class PartitionMerge:
    """One page read across `parts` from `positions` (`cursor_positions`): the heads of
    every partition, merged by (processedAt, partition, seq). Each partition is read
    strictly in seq order and its position only moves past what was read, so an event
    stored later lands after the cursor: never skipped. Every partition's reads share
    one scan budget of `max_scan` entries (page_read.py), and the page ends after the
    event that brings its bodies to `max_bytes`. Raises `Unavailable` when the cluster
    does not answer."""

    def __init__(
        self,
        nodes: ClusterNodes,
        keys: ClusterKeyLayout,
        parts: Sequence[int],
        positions: Mapping[int, int],
        query: PageQuery,
        max_scan: int,
        max_bytes: int = MAX_PAGE_BYTES,
    ) -> None:
        self._query = query
        self._max_bytes = max_bytes
        self._size = 0  # bytes of the bodies in the page so far
        # Bodies are read ahead per partition: no more than the page can use.
        self._chunk = min(query.limit, BODY_CHUNK)
        budget = ScanBudget(max_scan)
        self._heads: dict[int, _Head] = {}
        for p in parts:
            reader = IndexReader(nodes.read, keys.partition(p), query, budget)
            start = positions.get(p, 0)
            self._heads[p] = _Head(reader, start, reached=start)
        self._ready: list[tuple[str, int, int]] = []

    def read(self) -> tuple[list[dict[str, Any]], str | None]:
        """The page's events, and the next cursor (None when every partition is read)."""
        events: list[dict[str, Any]] = []
        for p in self._heads:
            self._push(p)
        heapq.heapify(self._ready)
        while self._ready and len(events) < self._query.limit and self._size < self._max_bytes:
            _, p, _ = heapq.heappop(self._ready)
            head = self._heads[p]
            seq, _id, body = head.rows.pop(0)
            # Past the entries examined after it too, once nothing read is left.
            head.position = seq if head.rows else max(seq, head.reached)
            assert body is not None
            event = decode_event(body)
            if self._query.matches(event):
                events.append(event)
                self._size += len(body)
            before = len(self._ready)
            self._push(p)
            if len(self._ready) > before:
                heapq.heappush(self._ready, self._ready.pop())
        self._look_ahead()
        if all(not h.rows and h.done for h in self._heads.values()):
            return events, None
        return events, encode_cursor({p: h.position for p, h in self._heads.items()})

    def _push(self, p: int) -> None:
        """Put partition `p`'s next live entry among the ready heads, if it has one."""
        head = self._heads[p]
        while True:
            while not head.rows and not head.done and not head.reader.budget_spent:
                self._fetch(head, self._chunk)
            stale = []
            while head.rows and head.rows[0][2] is None:
                stale.append(head.rows.pop(0)[1])
            if stale:
                # Left behind by retention; dropped here so the next reader skips less.
                head.reader.drop_stale(stale)
                if not head.rows:
                    head.position = max(head.position, head.reached)
            if head.rows:
                body = head.rows[0][2]
                assert body is not None
                self._ready.append((_processed_at(body), p, head.rows[0][0]))
                return
            if head.done or head.reader.budget_spent:
                return

    def _look_ahead(self) -> None:
        """Find out whether the partitions with nothing buffered are read to the end, so
        the last page says so rather than leaving one empty page to follow."""
        for head in self._heads.values():
            if not head.rows and not head.done:
                head.done = not head.reader.more_after(head.position)

    def _fetch(self, head: _Head, count: int) -> None:
        """Read the next `count` candidates of the partition with their bodies."""
        found = head.reader.candidates(head.reached, count)
        ids = [event_id for _, event_id in found.rows]
        bodies = head.reader.bodies(ids, self._max_bytes - self._size) if ids else []
        head.rows += [(seq, i, b) for (seq, i), b in zip(found.rows, bodies, strict=False)]
        if len(bodies) < len(found.rows):
            # The rest waits for a later fetch (or page): only what was read is passed.
            head.reached = found.rows[len(bodies) - 1][0]
            head.done = False
        else:
            head.reached = found.reached
            head.done = found.done
        if not head.rows:
            head.position = max(head.position, head.reached)


def _processed_at(body: bytes) -> str:
    return str(decode_event(body).get("processedAt", ""))

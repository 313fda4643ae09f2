"""A page of the cluster store: every partition's index read in its own order and the
heads merged, and the cursor that says where each partition's reading stopped."""

from __future__ import annotations

import base64
import binascii
import heapq
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from consumer_service.storage.base import PageQuery, decode_event
from consumer_service.storage.cluster_nodes import ClusterNodes
from consumer_service.storage.keys import ClusterKeyLayout, KeyLayout

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
    """One partition's unread index entries during a page: (seq, eventId, body)."""

    keys: KeyLayout
    index: str
    position: int
    rows: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    done: bool = False


class PartitionMerge:
    """One page read across `parts` from `positions` (`cursor_positions`): the heads of
    every partition, merged by (processedAt, partition, seq). Each partition is read
    strictly in seq order and its position only moves past what was read, so an event
    stored later lands after the cursor: never skipped. Raises `Unavailable` when the
    cluster does not answer."""

    def __init__(
        self,
        nodes: ClusterNodes,
        keys: ClusterKeyLayout,
        parts: Sequence[int],
        positions: Mapping[int, int],
        query: PageQuery,
        max_scan: int,
    ) -> None:
        self._nodes = nodes
        self._query = query
        self._max_scan = max_scan
        self._chunk = max(min(query.limit, max_scan), 50)
        self._heads: dict[int, _Head] = {}
        for p in parts:
            layout = keys.partition(p)
            index = layout.index_for(query.user_id, query.event_type)
            self._heads[p] = _Head(layout, index, positions.get(p, 0))
        self._ready: list[tuple[str, int, int]] = []

    def read(self) -> tuple[list[dict[str, Any]], str | None]:
        """The page's events, and the next cursor (None when every partition is read)."""
        events: list[dict[str, Any]] = []
        scanned = 0
        for p in self._heads:
            self._push(p)
        heapq.heapify(self._ready)
        while self._ready and len(events) < self._query.limit and scanned < self._max_scan:
            _, p, _ = heapq.heappop(self._ready)
            head = self._heads[p]
            seq, _id, body = head.rows.pop(0)
            head.position = seq
            scanned += 1
            assert body is not None
            event = decode_event(body)
            if self._query.matches(event):
                events.append(event)
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
        while not head.rows and not head.done:
            self._fetch(head, self._chunk)
        while head.rows and head.rows[0][2] is None:
            self._drop_stale(head)
        if head.rows:
            body = head.rows[0][2]
            assert body is not None
            self._ready.append((_processed_at(body), p, head.rows[0][0]))
        elif not head.done:
            self._push(p)

    def _look_ahead(self) -> None:
        """Find out whether the partitions with nothing buffered are read to the end, so
        the last page says so rather than leaving one empty page to follow."""
        for head in self._heads.values():
            if not head.rows and not head.done:
                self._fetch(head, 1)
                while head.rows and head.rows[0][2] is None:
                    self._drop_stale(head)

    def _fetch(self, head: _Head, count: int) -> None:
        after = head.rows[-1][0] if head.rows else head.position
        rows = cast(
            "list[tuple[bytes, float]]",
            self._nodes.read(
                lambda rc: rc.zrangebyscore(
                    head.index, f"({after}", "+inf", start=0, num=count, withscores=True
                )
            ),
        )
        if len(rows) < count:
            head.done = True
        if not rows:
            return
        ids = [m.decode() for m, _ in rows]
        bodies = cast(
            "list[bytes | None]",
            self._nodes.read(lambda rc: rc.mget([head.keys.event(i) for i in ids])),
        )
        head.rows += [(int(s), i, b) for (_, s), i, b in zip(rows, ids, bodies, strict=True)]

    def _drop_stale(self, head: _Head) -> None:
        # Left behind by retention; dropped here so the next reader skips less.
        seq, event_id, _ = head.rows.pop(0)
        head.position = seq
        self._nodes.read(lambda rc: rc.zrem(head.index, event_id))


def _processed_at(body: bytes) -> str:
    return str(decode_event(body).get("processedAt", ""))

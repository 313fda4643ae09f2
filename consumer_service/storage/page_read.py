"""How a page finds its events in one layout's indexes (a single node's prefix, or one
partition of a cluster), at a cost bounded by the page and not by the store.

The walk goes through the narrowest index (`KeyLayout.index_for`) in seq order. What
the filters can decide without an event's body, they decide from the indexes: its type
(ZMSCORE on the type's index, when the user's index is walked) and its time (ZMSCORE on
the time index). Bodies are read only for the events that pass, and only as many as
the page's byte budget takes (`IndexReader.bodies`). A time window that holds few
events (at most `max_scan` in the layout) is not walked at all: its events are listed
from the time index, their seqs read from the walked index, and a window holding none
costs one round trip.

Every entry walked is charged to a `ScanBudget` shared by the page (by every partition
of a cluster); once it is spent the page ends with a cursor. So a page walks at most
`max_scan` entries, and lists at most `max_scan` per layout, however sparse its
filters. A listing is not charged to the walk budget: it is read again whole by every
page of the window, and charging it would let one partition's listing starve the
others' walks page after page.

The time index is trusted only while it holds as many entries as the index: the store
script enters and removes both together, so they then hold the same events. Events
stored by a release that kept no time index make the counts differ; until retention
has removed those events (or `backfill_time_index` has indexed them) a time window is
walked, and an event without a time entry is judged by its body.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from consumer_service.storage.base import PageQuery, Run
from consumer_service.storage.keys import KeyLayout
from consumer_service.storage.script import READ_BODIES_LUA
from consumer_service.storage.timeindex import time_score

# Bodies a cluster page reads ahead per partition (it merges the partitions' heads).
BODY_CHUNK = 50
# Index entries walked per round trip when the filters may skip some: entries cost a few
# dozen bytes each, so a sparse filter takes few round trips.
WALK_CHUNK = 500


@dataclass
class ScanBudget:
    """Index entries a page may still walk, of `limit`; `limit` also caps the entries
    of a window listed from one layout's time index."""

    limit: int
    left: int = field(init=False)

    def __post_init__(self) -> None:
        self.left = self.limit

    @property
    def spent(self) -> bool:
        return self.left <= 0


@dataclass(frozen=True)
class Candidates:
    """What `IndexReader.candidates` found: `rows`, (seq, eventId) in seq order, that the
    filters may match (the body decides); every entry up to `reached` that is not among
    them does not match; `done`: nothing after `reached` can match (as of now)."""

    rows: list[tuple[int, str]]
    reached: int
    done: bool


def time_window(query: PageQuery) -> tuple[str, str] | None:
    """The query's time window as ZRANGEBYSCORE bounds of the time index, or None."""
    if query.since is None and query.until is None:
        return None
    low = "-inf" if query.since is None else str(time_score(query.since))
    high = "+inf" if query.until is None else f"({time_score(query.until)}"
    return low, high


class IndexReader:
    """The reads of one page in one layout. Raises what `run` raises."""

    def __init__(self, run: Run, keys: KeyLayout, query: PageQuery, budget: ScanBudget) -> None:
        self._run = run
        self._keys = keys
        self._budget = budget
        self._walked = keys.index_for(query.user_id, query.event_type)
        # The walked index is the user's: the type is checked against the type's index.
        self._type_index = (
            keys.event_type(query.event_type)
            if query.user_id is not None and query.event_type is not None
            else None
        )
        self._window = time_window(query)
        self._planned = False
        self._listed: list[tuple[int, str]] | None = None
        self._listed_seqs: list[int] = []

    @property
    def budget_spent(self) -> bool:
        """True once the page may read no further here: it has walked as many entries
        as it may. Never for a listed window (its cost was bounded when listed)."""
        return self._listed is None and self._budget.spent

    def candidates(self, after: int, count: int) -> Candidates:
        """At most `count` (`count` >= 1) entries after seq `after` that may match."""
        if not self._planned:
            self._plan()
        if self._listed is not None:
            rest = self._listed[bisect_right(self._listed_seqs, after) :]
            if len(rest) <= count:
                return Candidates(rest, rest[-1][0] if rest else after, True)
            return Candidates(rest[:count], rest[count - 1][0], False)
        return self._walk(after, count)

    def bodies(self, ids: Sequence[str], max_bytes: int) -> list[bytes | None]:
        """The stored bodies of the leading `ids`: those that come to less than
        `max_bytes`, and the one that reaches it (at least one). None for an event that
        retention has deleted. One round trip (read_bodies.lua), which reads nothing
        past the budget."""
        keys = [self._keys.event(i) for i in ids]
        return cast(
            "list[bytes | None]",
            self._run(lambda r: r.register_script(READ_BODIES_LUA)(keys=keys, args=[max_bytes])),
        )

    def drop_stale(self, ids: Sequence[str]) -> None:
        """Remove from the walked index the entries of events retention has deleted, so
        the next reader skips less. From the whole index, the time index's entries go in
        the same transaction (the two stay in step)."""
        if not ids:
            return
        walked, time = self._walked, self._keys.time
        if walked != self._keys.index:
            self._run(lambda r: r.zrem(walked, *ids))
            return

        def both(r: Any) -> None:
            with r.pipeline(transaction=True) as pipe:
                pipe.zrem(walked, *ids)
                pipe.zrem(time, *ids)
                pipe.execute()

        self._run(both)

    def more_after(self, after: int) -> bool:
        """True when the walked index (or the listed window) has an entry after `after`."""
        if self._listed is not None:
            return bool(self._listed) and self._listed[-1][0] > after
        walked = self._walked
        return bool(self._run(lambda r: r.zrangebyscore(walked, f"({after}", "+inf", 0, 1)))

    def _plan(self) -> None:
        """With a time window: list it from the time index when the index can be trusted
        and the window holds no more than `ScanBudget.limit` entries in this layout."""
        self._planned = True
        if self._window is None:
            return
        low, high = self._window
        index, time = self._keys.index, self._keys.time

        def count(r: Any) -> list[int]:
            with r.pipeline(transaction=False) as pipe:
                pipe.zcard(index)
                pipe.zcard(time)
                pipe.zcount(time, low, high)
                return cast("list[int]", pipe.execute())

        in_index, in_time, in_window = self._run(count)
        if in_index != in_time or in_window > self._budget.limit:
            return
        self._listed = self._list(low, high) if in_window else []
        self._listed_seqs = [seq for seq, _ in self._listed]

    def _list(self, low: str, high: str) -> list[tuple[int, str]]:
        """The window's entries in the walked index (and the type's), in seq order."""
        time, walked, type_index = self._keys.time, self._walked, self._type_index
        raw = cast("list[bytes]", self._run(lambda r: r.zrangebyscore(time, low, high)))
        ids = [m.decode() for m in raw]
        if not ids:
            return []

        def seqs(r: Any) -> list[list[float | None]]:
            with r.pipeline(transaction=False) as pipe:
                pipe.zmscore(walked, ids)
                if type_index is not None:
                    pipe.zmscore(type_index, ids)
                return cast("list[list[float | None]]", pipe.execute())

        found = self._run(seqs)
        of_type = found[1] if type_index is not None else [0.0] * len(ids)
        return sorted(
            (int(seq), i)
            for i, seq, t in zip(ids, found[0], of_type, strict=True)
            if seq is not None and t is not None
        )

    def _walk(self, after: int, count: int) -> Candidates:
        """Walk the index from `after`: entries the indexes show cannot match are passed
        over without reading their bodies."""
        rows: list[tuple[int, str]] = []
        reached = after
        checks = self._type_index is not None or self._window is not None
        while len(rows) < count and not self._budget.spent:
            # Without a check every entry is a candidate: read no more than asked for.
            chunk = min(max(count - len(rows), WALK_CHUNK) if checks else count, self._budget.left)
            entries = self._entries(reached, chunk)
            keep = self._passing([i for _, i in entries]) if checks else [True] * len(entries)
            for (seq, event_id), ok in zip(entries, keep, strict=True):
                self._budget.left -= 1
                reached = seq
                if ok:
                    rows.append((seq, event_id))
                    if len(rows) == count:
                        return Candidates(rows, reached, False)
            if len(entries) < chunk:
                return Candidates(rows, reached, True)
        return Candidates(rows, reached, False)

    def _entries(self, after: int, chunk: int) -> list[tuple[int, str]]:
        walked = self._walked
        raw = cast(
            "list[tuple[bytes, float]]",
            self._run(
                lambda r: r.zrangebyscore(
                    walked, f"({after}", "+inf", start=0, num=chunk, withscores=True
                )
            ),
        )
        return [(int(s), m.decode()) for m, s in raw]

    def _passing(self, ids: list[str]) -> list[bool]:
        """Per entry: False when the type's or the time index shows it cannot match. An
        event without a time entry (stored before the time index) passes: its body
        decides."""
        if not ids:
            return []
        type_index, window, time = self._type_index, self._window, self._keys.time

        def scores(r: Any) -> list[list[float | None]]:
            with r.pipeline(transaction=False) as pipe:
                if type_index is not None:
                    pipe.zmscore(type_index, ids)
                if window is not None:
                    pipe.zmscore(time, ids)
                return cast("list[list[float | None]]", pipe.execute())

        got = self._run(scores)
        keep = [True] * len(ids)
        if type_index is not None:
            keep = [k and s is not None for k, s in zip(keep, got[0], strict=True)]
        if window is not None:
            low, high = _bounds(window)
            keep = [
                k and (t is None or low <= t < high) for k, t in zip(keep, got[-1], strict=True)
            ]
        return keep


def _bounds(window: tuple[str, str]) -> tuple[float, float]:
    """The window's [low, high) as numbers."""
    low, high = window
    return float(low), float(high.lstrip("("))

"""Bring the time index (keys.py: `P:time`) in step with the index, for a store written
before the time index existed, or partly by such a release:

    python -m consumer_service.storage.time_backfill

Enters every event of the index that has no time entry, and removes every time entry
whose event has left the index. Afterwards the two hold the same events, and the read
API lists time windows from the time index again (page_read.py). Each chunk is one
script that checks the index as it writes (repair_time_index.lua), so the worker and
the read API may run meanwhile. Running it again is harmless.

Settings as the consumer's: REDIS_URL, CONSUMER_REDIS_PREFIX, CONSUMER_REDIS_MODE. Prints
one JSON line of counts. Exit status: 0 done, 1 Redis did not answer, 2 bad settings.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, cast

from consumer_service.config import ConsumerSettings
from consumer_service.storage.base import RedisStore, Run, decode_event
from consumer_service.storage.connect import open_store
from consumer_service.storage.keys import KeyLayout
from consumer_service.storage.script import REPAIR_TIME_INDEX_LUA
from consumer_service.storage.timeindex import time_score
from shared.errors import ConfigError, Unavailable

CHUNK = 500


@dataclass
class Repaired:
    """What a backfill did: events entered, stale entries removed."""

    entered: int = 0
    removed: int = 0


def backfill(store: RedisStore, chunk: int = CHUNK) -> Repaired:
    """Bring every layout of `store` in step. Raises `Unavailable` when Redis does not
    answer (what was done stays done)."""
    done = Repaired()
    for run, keys in store.layouts():
        _enter_missing(run, keys, chunk, done)
        _remove_stale(run, keys, chunk, done)
    return done


def _repair(run: Run, keys: KeyLayout, add: list[str], remove: list[str]) -> tuple[int, int]:
    """(entered, removed) by one repair script: `add` is (score, eventId) pairs."""
    if not add and not remove:
        return 0, 0
    args = [len(add) // 2, *add, *remove]
    script_keys = [keys.index, keys.time]
    result = run(lambda r: r.register_script(REPAIR_TIME_INDEX_LUA)(keys=script_keys, args=args))
    return int(result[0]), int(result[1])


def _enter_missing(run: Run, keys: KeyLayout, chunk: int, done: Repaired) -> None:
    """Walk the index in seq order; enter the events without a time entry."""
    after = 0
    while rows := _entries(run, keys.index, after, chunk):
        after = int(rows[-1][1])
        ids = [m.decode() for m, _ in rows]
        missing = [i for i, s in zip(ids, _scores(run, keys.time, ids), strict=True) if s is None]
        if not missing:
            continue
        bodies = _bodies(run, [keys.event(i) for i in missing])
        add: list[str] = []
        for event_id, body in zip(missing, bodies, strict=True):
            score = _score(body)
            if score is not None:
                add += [score, event_id]
        done.entered += _repair(run, keys, add, [])[0]


def _remove_stale(run: Run, keys: KeyLayout, chunk: int, done: Repaired) -> None:
    """Scan the time index; remove the entries whose event is not in the index."""
    cursor = 0
    while True:
        cursor, found = _scan(run, keys.time, cursor, chunk)
        ids = [m.decode() for m, _ in found]
        gone = [i for i, s in zip(ids, _scores(run, keys.index, ids), strict=True) if s is None]
        if gone:
            done.removed += _repair(run, keys, [], gone)[1]
        if cursor == 0:
            return


def _entries(run: Run, index: str, after: int, chunk: int) -> list[tuple[bytes, float]]:
    return cast(
        "list[tuple[bytes, float]]",
        run(
            lambda r: r.zrangebyscore(
                index, f"({after}", "+inf", start=0, num=chunk, withscores=True
            )
        ),
    )


def _scores(run: Run, key: str, ids: list[str]) -> list[float | None]:
    return cast("list[float | None]", run(lambda r: r.zmscore(key, ids))) if ids else []


def _bodies(run: Run, events: list[str]) -> list[bytes | None]:
    return cast("list[bytes | None]", run(lambda r: r.mget(events)))


def _scan(run: Run, key: str, cursor: int, chunk: int) -> tuple[int, list[tuple[bytes, float]]]:
    at, found = run(lambda r: r.zscan(key, cursor, count=chunk))
    return int(at), cast("list[tuple[bytes, float]]", found)


def _score(body: bytes | None) -> str | None:
    """The time score of a stored body; None when retention deleted it meanwhile, or it
    holds no stored timestamp (then it stays out, and the index keeps it walked)."""
    if body is None:
        return None
    try:
        event: dict[str, Any] = decode_event(body)
        return time_score(str(event.get("timestamp")))
    except ValueError:
        return None


def main() -> int:
    try:
        settings = ConsumerSettings.from_env()
    except ConfigError as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 2
    try:
        store = open_store(settings, timeout_seconds=settings.redis_timeout_seconds, writer=False)
        try:
            done = backfill(store)
        finally:
            store.close()
    except Unavailable as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 1
    print(json.dumps({"entered": done.entered, "removed": done.removed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The store on one Redis node (not a Cluster: the script builds key names itself): every
batch is one call of the store script, under one prefix (keys.py's layout)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis

from consumer_service.pipeline.processing import Accepted
from consumer_service.storage.base import (
    ERASURE_TTL_SECONDS,
    MAX_PAGE_BYTES,
    MAX_SCAN,
    BatchResult,
    Chain,
    Page,
    PageQuery,
    RedisStore,
    Run,
    StoreFenced,
    StoreRefused,
    decode_event,
)
from consumer_service.storage.durability import Durability, read_durability
from consumer_service.storage.erase import (
    ERASE_USER_LUA,
    Erasure,
    Position,
    erase_args,
    erase_until_done,
)
from consumer_service.storage.keys import KeyLayout
from consumer_service.storage.page_read import IndexReader, ScanBudget
from consumer_service.storage.script import FENCED, STORE_BATCH_LUA
from shared.errors import Unavailable

# The cursor is the last sequence number read: what the read API's query schema accepts.
_SEQ_CURSOR = re.compile(r"[0-9]{1,18}")


class RedisEventStore(RedisStore):
    """EventStore on one Redis."""

    # A second batch goes out while Redis runs the first: Redis never waits for the
    # worker between two scripts, and one fsync may cover both.
    max_in_flight = 2
    opaque_cursor = False

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        dedup_ttl_seconds: int,
        retention_max_events: int = 0,
        retention_max_age_seconds: int = 0,
        erasure_ttl_seconds: int = ERASURE_TTL_SECONDS,
    ) -> None:
        super().__init__(
            prefix,
            dedup_ttl_seconds,
            retention_max_events,
            retention_max_age_seconds,
            erasure_ttl_seconds,
        )
        self._redis = client
        self._keys = KeyLayout(prefix)
        self._script = client.register_script(STORE_BATCH_LUA)
        self._erase = client.register_script(ERASE_USER_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str,
        dedup_ttl_seconds: int,
        *,
        retention_max_events: int = 0,
        retention_max_age_seconds: int = 0,
        erasure_ttl_seconds: int = ERASURE_TTL_SECONDS,
        timeout_seconds: float = 5.0,
    ) -> RedisEventStore:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        return cls(
            client,
            prefix,
            dedup_ttl_seconds,
            retention_max_events,
            retention_max_age_seconds,
            erasure_ttl_seconds,
        )

    def store_batch(
        self,
        events: Sequence[Accepted],
        processed_at: str,
        dead_lettered: Mapping[str, int] | None = None,
        chain: Chain | None = None,
    ) -> BatchResult:
        dead = {reason: n for reason, n in (dead_lettered or {}).items() if n}
        if not events and not dead and chain is None:
            # A chained batch runs even when empty: its successor waits for its number.
            return BatchResult((), (), ())
        args = self._script_args(self._prefix, events, processed_at, dead, chain)
        try:
            results = self._script(keys=[], args=args)
        except redis.ResponseError as exc:
            raise StoreRefused(
                f"Redis refused to store the batch, which is retried until an operator "
                f"fixes Redis: {exc}"
            ) from exc
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not store the batch: {exc}") from exc
        if results == FENCED:
            raise StoreFenced(f"batch {chain.number if chain else 0} waits for its predecessor")
        return BatchResult.from_codes(events, results)

    def erase_user(self, user_id: str) -> Erasure:
        def call(position: Position) -> Any:
            args = erase_args(self._prefix, user_id, position, self._erasure_ttl, data_key=True)
            return self._erase(keys=[], args=args)

        try:
            return erase_until_done(call, None)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not erase the user's events: {exc}") from exc

    def get(self, event_id: str) -> dict[str, Any] | None:
        try:
            body = cast("bytes | None", self._redis.get(self._keys.event(event_id)))
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc
        return None if body is None else decode_event(body)

    def parse_cursor(self, token: str) -> int:
        if not _SEQ_CURSOR.fullmatch(token):
            raise ValueError("Not a valid cursor.")
        return int(token)

    def page(
        self, query: PageQuery, max_scan: int = MAX_SCAN, max_bytes: int = MAX_PAGE_BYTES
    ) -> Page:
        try:
            return self._page(query, max_scan, max_bytes)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc

    def _page(self, q: PageQuery, max_scan: int, max_bytes: int) -> Page:
        reader = IndexReader(self._run, self._keys, q, ScanBudget(max_scan))
        events: list[dict[str, Any]] = []
        position = int(q.cursor)
        size = 0
        while len(events) < q.limit and size < max_bytes:
            found = reader.candidates(position, q.limit - len(events))
            ids = [event_id for _, event_id in found.rows]
            bodies = reader.bodies(ids, max_bytes - size) if ids else []
            stale: list[str] = []
            for (seq, event_id), body in zip(found.rows, bodies, strict=False):
                position = seq
                if body is None:
                    stale.append(event_id)
                    continue
                event = decode_event(body)
                if q.matches(event):
                    events.append(event)
                    size += len(body)
            reader.drop_stale(stale)
            if len(bodies) < len(found.rows):
                break  # the byte budget is spent
            # Every candidate was read: so is every entry up to `reached`.
            position = max(position, found.reached)
            if found.done:
                return Page(events, self._total(), None)
            if reader.budget_spent:
                break
        more = reader.more_after(position)
        return Page(events, self._total(), position if more else None)

    def _total(self) -> int:
        return int(self._redis.zcard(self._keys.index))

    def stats(self) -> dict[str, Any]:
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._keys.stats)
                pipe.zcard(self._keys.index)
                raw, stored = pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc
        return self._totals({k.decode(): int(v) for k, v in raw.items()}, int(stored))

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def durability(self) -> Durability:
        try:
            return read_durability(self._redis)
        except redis.RedisError as exc:
            return Durability(None, None, problem=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._redis.close()

    def layouts(self) -> list[tuple[Run, KeyLayout]]:
        return [(self._run, self._keys)]

    def _run(self, call: Callable[[redis.Redis], Any]) -> Any:
        try:
            return call(self._redis)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from exc

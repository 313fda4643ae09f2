"""The per-user data keys in the shared Redis, with a bounded in-memory cache.

`DataKeys.for_writing` (the producer) gets each user's key, creating a missing one with
SET NX so that two producers racing for a new user agree on one key. `for_reading` (the
consumer and the read API) only looks keys up: a missing key means the user was erased.

The cache holds at most `cache_size` unwrapped keys (least recently used leave first).
Every erasure deletes a key and, in the same step, increments one counter in Redis,
`erasures`. A process reads that counter at most every `cache_seconds` and empties its
cache when it changed. That interval is the whole window in which a deleted key can
still be used: a producer process seals an erased user's new events under the deleted
key for at most `cache_seconds` after the erasure; the consumer drops those events as
erased, as it drops the user's older ones. `cache_seconds=0` reads the counter on every
call (one Redis round trip per request, no window). Erasures are rare, so the cache
lives long while the cost stays one small read per interval per process, whatever the
number of users.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis

from shared.errors import Unavailable
from shared.payload_crypto import (
    DataKey,
    MasterKeys,
    PayloadKeyError,
    new_data_key,
    unwrap,
    wrapped_form,
)


class DataKeys:
    """Data keys of users, named by `name(user_id)` in Redis at `client`. Safe to share
    between threads. Every method raises `Unavailable` when Redis does not answer."""

    def __init__(
        self,
        client: Any,
        master: MasterKeys,
        name: Callable[[str], str],
        erasures: str,
        *,
        cache_size: int = 10_000,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._master = master
        self._name = name
        self._erasures = erasures
        self._cache: OrderedDict[str, DataKey] = OrderedDict()
        self._size = cache_size
        self._interval = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # The erasure counter as last read, and when to read it again.
        self._seen: bytes | None = None
        self._next_check = -float("inf")
        # How many times the cache was emptied: a key read from Redis before an emptying
        # may be the erased one, and is used once but not cached.
        self._epoch = 0

    @property
    def master(self) -> MasterKeys:
        return self._master

    def for_writing(self, user_ids: Collection[str]) -> dict[str, DataKey]:
        """Each user's data key, made and stored (SET NX) for a user who has none; when two
        callers make one at once, both use the one Redis kept. Raises PayloadKeyError when
        a stored key does not open with the master keys."""
        keys, missing, epoch = self._cached(user_ids)
        if not missing:
            return keys
        found = dict(zip(missing, self._fetch(missing), strict=True))
        absent = [u for u in missing if found[u] is None]
        if absent:
            forms = {u: wrapped_form(self._master, u, *new_data_key()) for u in absent}
            won = self._call(lambda: self._set_new(forms))
            for user_id, ok in zip(absent, won, strict=True):
                if ok:
                    found[user_id] = forms[user_id]
            # Another producer created these first: use the ones it stored.
            lost = [u for u, ok in zip(absent, won, strict=True) if not ok]
            if lost:
                found.update(zip(lost, self._fetch(lost), strict=True))
        for user_id, stored in found.items():
            if stored is None:
                raise Unavailable("a data key vanished while it was being created; try again")
            keys[user_id] = self._remember(user_id, unwrap(self._master, user_id, stored), epoch)
        return keys

    def for_reading(self, user_ids: Collection[str]) -> dict[str, DataKey | PayloadKeyError | None]:
        """Each user's data key; None for a user who has none (erased, or never wrote an
        encrypted event); the PayloadKeyError of a stored key that does not open with the
        master keys (one user's bad key must not stop the others')."""
        keys, missing, epoch = self._cached(user_ids)
        out: dict[str, DataKey | PayloadKeyError | None] = dict(keys)
        if missing:
            for user_id, stored in zip(missing, self._fetch(missing), strict=True):
                if stored is None:
                    out[user_id] = None
                    continue
                try:
                    key = unwrap(self._master, user_id, stored)
                    out[user_id] = self._remember(user_id, key, epoch)
                except PayloadKeyError as exc:
                    out[user_id] = exc
        return out

    def _cached(self, user_ids: Collection[str]) -> tuple[dict[str, DataKey], list[str], int]:
        """The cached keys of `user_ids`, the users missing, and the cache's epoch."""
        self._check_erasures()
        keys: dict[str, DataKey] = {}
        missing: list[str] = []
        with self._lock:
            for user_id in user_ids:
                hit = self._cache.get(user_id)
                if hit is not None:
                    self._cache.move_to_end(user_id)
                    keys[user_id] = hit
                else:
                    missing.append(user_id)
            epoch = self._epoch
        return keys, missing, epoch

    def _check_erasures(self) -> None:
        """Empty the cache when the erasure counter moved; read it at most every
        `cache_seconds` (on every call at 0)."""
        now = self._clock()
        if now < self._next_check:
            return
        counter = self._call(lambda: self._client.get(self._erasures))
        with self._lock:
            if counter != self._seen:
                self._cache.clear()
                self._epoch += 1
                self._seen = counter
            self._next_check = now + self._interval

    def _remember(self, user_id: str, key: DataKey, epoch: int) -> DataKey:
        if self._size <= 0:
            return key
        with self._lock:
            if epoch != self._epoch:
                return key
            self._cache[user_id] = key
            self._cache.move_to_end(user_id)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return key

    def _fetch(self, user_ids: Sequence[str]) -> list[bytes | None]:
        names = [self._name(u) for u in user_ids]
        client = self._client
        if isinstance(client, redis.RedisCluster):
            found: list[bytes | None] = self._call(lambda: client.mget_nonatomic(names))
        else:
            found = self._call(lambda: client.mget(names))
        return found

    def _set_new(self, forms: dict[str, bytes]) -> list[bool]:
        pipe = self._client.pipeline(transaction=False)
        for user_id, form in forms.items():
            pipe.set(self._name(user_id), form, nx=True)
        return [bool(ok) for ok in pipe.execute()]

    @staticmethod
    def _call(op: Callable[[], Any]) -> Any:
        try:
            return op()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer for the payload data keys: {exc}") from exc


def check_master_keys(client: Any, master: MasterKeys, name: Callable[[str], str]) -> None:
    """The start-up self-check: for each master key id, a check value stored under
    `name(key_id)` (made by the first service to start with that id, SET NX) must open
    with this process's key of that id. Raises PayloadKeyError naming the id whose key
    differs from the one the rest of the deployment uses; `Unavailable` when Redis does
    not answer."""
    for key_id, key in master.keys:
        single = MasterKeys(((key_id, key),))
        form = wrapped_form(single, "", key_id, b"\0" * 32)
        try:
            client.set(name(key_id), form, nx=True)
            stored = client.get(name(key_id))
        except redis.RedisError as exc:
            raise Unavailable(f"Redis did not answer the master key check: {exc}") from exc
        if stored is None:
            continue
        try:
            unwrap(single, "", stored)
        except PayloadKeyError:
            raise PayloadKeyError(
                f"PAYLOAD_ENCRYPTION_KEYS: the key of id {key_id!r} is not the key other "
                f"services stored under that id; every service needs the same keys"
            ) from None

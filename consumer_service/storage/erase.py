"""Erasing a user's stored events: the script (erase_user.lua, shipped with the package),
its answer (`Erasure`) and the loop both backends run it in. The script's header says
what it deletes, what it keeps, and the erasure record it writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from consumer_service.storage import keys
from shared.events import utc_timestamp

ERASE_USER_LUA = (
    resources.files("consumer_service.storage").joinpath("erase_user.lua").read_text("utf-8")
)

# Events one script call erases: a few milliseconds of Redis time, so a user with a
# million events does not stop Redis answering the worker and the readers meanwhile.
ERASE_PER_CALL = 500

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Erasure:
    """What one erasure did: `deleted` stored events, and its cutoff: from now on no
    event of the user whose `timestamp` is at or before `cutoff_ms` (ms since the epoch)
    is stored again, until the erasure record expires."""

    deleted: int
    cutoff_ms: int

    @property
    def erased_through(self) -> str:
        """The cutoff as a timestamp in the events' own format."""
        # Whole milliseconds added to the epoch: exact, where a float of seconds is not.
        return utc_timestamp(_EPOCH + timedelta(milliseconds=self.cutoff_ms))


# Where an erasure stands under one prefix, as the script answers it: its cutoff, and the
# `upto` and `after` of its walk through the user's index (None: not decided yet).
Position = tuple[int | None, int | None, int | None]


def erase_args(
    prefix: str, user_id: str, position: Position, ttl_seconds: int, data_key: bool = False
) -> list[Any]:
    """The script's ARGV for `user_id`'s events under `prefix`, from `position`; with
    `data_key`, the script deletes the user's payload data key too (on a single node)."""
    args: list[Any] = [
        prefix,
        user_id,
        ERASE_PER_CALL,
        *("" if n is None else n for n in position),
        ttl_seconds,
    ]
    if not data_key:
        return args
    return [*args, keys.data_key(prefix, user_id), keys.data_key_erasures(prefix)]


def erase_until_done(call: Callable[[Position], Sequence[Any]], cutoff_ms: int | None) -> Erasure:
    """Run `call(position)` (one script call under one prefix, answering `{erased, left,
    cutoff, upto, after}`) until the walk through the user's index is done: first with
    `cutoff_ms` (None: Redis's clock decides it), then where the script left off. What
    it erased, with the cutoff."""
    total = 0
    position: Position = (cutoff_ms, None, None)
    while True:
        erased, left, cutoff, upto, after = (int(n) for n in call(position))
        total += erased
        position = (cutoff, upto, after)
        if left == 0:
            return Erasure(total, cutoff)

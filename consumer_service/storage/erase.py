"""Erasing a user's stored events: the script (erase_user.lua, shipped with the package),
its answer (`Erasure`) and the loop both backends run it in. The script's header says
what it deletes, what it keeps, and the erasure record it writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from shared.events import utc_timestamp

ERASE_USER_LUA = (
    resources.files("consumer_service.storage").joinpath("erase_user.lua").read_text("utf-8")
)

# Events one script call erases: a few milliseconds of Redis time, so a user with a
# million events does not stop Redis answering the worker and the readers meanwhile.
ERASE_PER_CALL = 500


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
        return utc_timestamp(datetime.fromtimestamp(self.cutoff_ms / 1000, UTC))


def erase_args(
    prefix: str, user_id: str, cutoff_ms: int | None, upto: int | None, ttl_seconds: int
) -> list[Any]:
    """The script's ARGV for `user_id`'s events under `prefix`; `cutoff_ms` None on an
    erasure's first call (Redis's clock decides it), `upto` None on its first call under
    `prefix` (the user's latest stored event decides it)."""
    return [
        prefix,
        user_id,
        ERASE_PER_CALL,
        "" if cutoff_ms is None else cutoff_ms,
        "" if upto is None else upto,
        ttl_seconds,
    ]


def erase_until_done(
    call: Callable[[int | None, int | None], Sequence[Any]], cutoff_ms: int | None
) -> Erasure:
    """Run `call(cutoff, upto)` (one script call under one prefix, answering `{erased,
    left, cutoff, upto}`) until no event stored before the erasure is left there: first
    with `cutoff_ms` and no `upto`, then with what the script answered. What it erased,
    with the cutoff."""
    total = 0
    upto: int | None = None
    while True:
        erased, left, cutoff, upto = (int(n) for n in call(cutoff_ms, upto))
        total += erased
        cutoff_ms = cutoff
        if left == 0:
            return Erasure(total, cutoff)

"""Erasing a user's stored events: the script (erase_user.lua, shipped with the package)
and the loop both backends run it in. The script's header says what it deletes and what
it keeps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from consumer_service.storage import keys

ERASE_USER_LUA = (
    resources.files("consumer_service.storage").joinpath("erase_user.lua").read_text("utf-8")
)

# Events one script call erases: a few milliseconds of Redis time, so a user with a
# million events does not stop Redis answering the worker and the readers meanwhile.
ERASE_PER_CALL = 500


def erase_args(prefix: str, user_id: str, data_key: bool = False) -> list[Any]:
    """The script's ARGV for `user_id`'s events under `prefix`; with `data_key`, the
    script deletes the user's payload data key too (on a single node)."""
    args: list[Any] = [prefix, user_id, ERASE_PER_CALL]
    if not data_key:
        return args
    return [*args, keys.data_key(prefix, user_id), keys.data_key_erasures(prefix)]


def erase_until_done(call: Callable[[], Sequence[Any]]) -> int:
    """Run `call` (one script call under one prefix, answering `{erased, left}`) until
    the user has no event left there; the events erased in all."""
    total = 0
    while True:
        erased, left = (int(n) for n in call())
        total += erased
        if left == 0:
            return total

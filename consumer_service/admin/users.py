"""`pipeline-admin user erase USER_ID`: delete every stored event of one user, in the
Redis the consumer writes to (REDIS_URL, CONSUMER_REDIS_PREFIX, one node or a cluster),
and print what was deleted as one JSON line, as `DELETE /users/{userId}/events` answers."""

from __future__ import annotations

import json
from typing import TextIO

from consumer_service.config import ConsumerSettings
from consumer_service.storage import open_store
from shared.errors import ConfigError
from shared.event_rules import USER_ID_MAX

# Seconds one Redis call may take: an erase step is a few milliseconds of Redis time.
REDIS_TIMEOUT_SECONDS = 10.0


def check_user_id(user_id: str) -> None:
    """ConfigError (a usage error) for a userId no event can have."""
    if not 1 <= len(user_id) <= USER_ID_MAX:
        raise ConfigError(f"USER_ID must be 1-{USER_ID_MAX} characters")


def erase_user(settings: ConsumerSettings, user_id: str, out: TextIO) -> None:
    """Erase `user_id`'s stored events and print `{"userId", "deleted", "erasedThrough"}`
    to `out`.
    Raises `Unavailable` when Redis does not answer (running it again is safe)."""
    store = open_store(settings, timeout_seconds=REDIS_TIMEOUT_SECONDS, writer=False)
    try:
        erasure = store.erase_user(user_id)
    finally:
        store.close()
    answer = {
        "userId": user_id,
        "deleted": erasure.deleted,
        "erasedThrough": erasure.erased_through,
    }
    print(json.dumps(answer, ensure_ascii=False), file=out)

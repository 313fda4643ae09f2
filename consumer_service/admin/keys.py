"""`pipeline-admin keys rewrap`: wrap every user's payload data key with the current
master key (the first of PAYLOAD_ENCRYPTION_KEYS), so that an older master key can be
removed (docs/personal-data.md, "Rotating the master key").

A data key changes only if Redis still holds the very value that was read: a key erased
meanwhile is never brought back, and one another run rewrapped is left as it is. Running
it again is safe; it prints `{"rewrapped", "current", "unreadable"}` as one JSON line.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.shredding import key_client
from consumer_service.storage.keys import data_key
from shared.errors import ConfigError
from shared.payload_crypto import PayloadKeyError, master_id_of, unwrap_bytes, wrapped_form

# Replace the value only if it is still the one read (compare and set).
_SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def rewrap(settings: ConsumerSettings, out: TextIO) -> dict[str, int]:
    """Rewrap the data keys under CONSUMER_REDIS_PREFIX and print the counts: keys
    rewrapped now, keys already under the current master key, and keys no configured
    master key opens (named on `out`, one JSON line each; such a key cannot be rewrapped
    and its user's payloads stay unreadable until its master key is configured again).
    Raises ConfigError without PAYLOAD_ENCRYPTION_KEYS; redis errors propagate."""
    if not settings.encryption.enabled:
        raise ConfigError("PAYLOAD_ENCRYPTION_KEYS is not set: there is nothing to rewrap")
    master = settings.encryption.master_keys()
    client: Any = key_client(settings)
    head = data_key(settings.redis_prefix, "")[:-1]  # "<P>:datakey:{"
    counts = {"rewrapped": 0, "current": 0, "unreadable": 0}
    for raw_name in client.scan_iter(match=f"{_glob_escape(head)}*", count=1000):
        name = raw_name.decode("utf-8", "surrogateescape")
        user_id = name[len(head) : -1]
        stored = client.get(name)
        if stored is None:
            continue  # erased since the scan saw it
        if master_id_of(stored) == master.current_id:
            counts["current"] += 1
            continue
        try:
            key_id, key = unwrap_bytes(master, user_id, stored)
        except PayloadKeyError as exc:
            counts["unreadable"] += 1
            print(json.dumps({"userId": user_id, "error": str(exc)}, ensure_ascii=False), file=out)
            continue
        fresh = wrapped_form(master, user_id, key_id, key)
        counts["rewrapped"] += int(client.eval(_SWAP, 1, name, stored, fresh))
    print(json.dumps(counts), file=out)
    return counts


def _glob_escape(text: str) -> str:
    """`text` matched literally by a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

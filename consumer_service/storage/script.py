"""The store's scripts, shipped with the package: store_batch.lua (its text, the names of
its answers and the encoding of its arguments), read_bodies.lua (the read API's body
reads) and repair_time_index.lua (time_backfill.py's writes). Each script's header
documents the layout of KEYS and ARGV and what each answer means."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from importlib import resources

from consumer_service.pipeline.processing import Accepted
from consumer_service.storage.timeindex import time_score
from shared.events import event_key

STORE_BATCH_LUA = (
    resources.files("consumer_service.storage").joinpath("store_batch.lua").read_text("utf-8")
)

# Redis names a script by the SHA-1 of its text.
STORE_BATCH_SHA = hashlib.sha1(STORE_BATCH_LUA.encode()).hexdigest()

READ_BODIES_LUA = (
    resources.files("consumer_service.storage").joinpath("read_bodies.lua").read_text("utf-8")
)
REPAIR_TIME_INDEX_LUA = (
    resources.files("consumer_service.storage").joinpath("repair_time_index.lua").read_text("utf-8")
)

# What the script answers per event; a stored event answers its sequence number (STORED:
# always > 0). FENCED is the whole answer of a chained batch that wrote nothing.
DUPLICATE = 0
REDELIVERED = -1
ERASED = -2
FENCED = b"FENCED"

# Count retention evicts at most EVICT_BASE + EVICT_PER_STORED x (events stored by the
# call) per call: Redis answers nobody else while a script runs, so lowering
# CONSUMER_RETENTION_MAX_EVENTS by 900,000 must not become one 900,000-event call. Each
# call evicts more than it stores, so the index still converges on the bound, a few
# thousand events per call (a few ms of Redis time).
EVICT_BASE = 1000
EVICT_PER_STORED = 2

_SHORT = struct.Struct(">H")
_LONG = struct.Struct(">I")


def event_blobs(events: Sequence[Accepted], processed_at: str) -> list[bytes]:
    """The events' part of the script's ARGV: one blob in the layout the script's
    header describes. The schema bounds userId and eventType far below 2-byte lengths
    (USER_ID_MAX, EVENT_TYPE_MAX characters of at most 4 bytes each)."""
    parts: list[bytes] = []
    add = parts.extend
    short = _SHORT.pack
    for ev in events:
        record = ev.record
        origin = b"%d:%d" % (ev.partition, ev.offset)
        event_id = ev.event_id.encode()
        event_type = str(record["eventType"]).encode()
        user_id = event_key(record).encode()
        time = time_score(record["timestamp"]).encode()
        body = ev.stored_form(processed_at)
        add(
            (
                short(len(origin)),
                origin,
                short(len(event_id)),
                event_id,
                short(len(event_type)),
                event_type,
                short(len(user_id)),
                user_id,
                short(len(time)),
                time,
                _LONG.pack(len(body)),
                body,
            )
        )
    return [b"".join(parts)]

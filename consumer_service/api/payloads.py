"""Opening encrypted payloads for the read API's answers (crypto-shredding,
docs/personal-data.md): the store keeps each event as the consumer received it, with
its payload sealed; a reader allowed to read events gets it back in plaintext."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from shared.data_keys import DataKeys
from shared.events import event_key
from shared.payload_crypto import DataKey, Envelope, PayloadKeyError, envelope_of, open_payload


class PayloadOpener:
    """Replaces sealed payloads of stored events by their plaintext."""

    def __init__(self, keys: DataKeys) -> None:
        self._keys = keys

    def reveal(self, events: Sequence[dict[str, Any]]) -> None:
        """Each event's sealed payload, in place, by the object it encrypts. A payload
        that cannot be opened (its user was erased while the answer was read, or the keys
        here are not the deployment's) stays the envelope: ciphertext, never an error
        that would hide the other events. Raises `Unavailable` when Redis does not
        answer."""
        sealed: list[tuple[dict[str, Any], Envelope]] = []
        for event in events:
            try:
                envelope = envelope_of(event["payload"])
            except PayloadKeyError:
                continue
            if envelope is not None:
                sealed.append((event, envelope))
        if not sealed:
            return
        keys = self._keys.for_reading({event_key(event) for event, _ in sealed})
        for event, envelope in sealed:
            key = keys[event_key(event)]
            if isinstance(key, DataKey):
                try:
                    plain = open_payload(key, event_key(event), event["eventId"], envelope)
                except PayloadKeyError:
                    continue
                event["payload"] = orjson.loads(plain)

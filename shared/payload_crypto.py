"""Crypto-shredding of event payloads: the master keys, the per-user data keys and the
envelope a payload travels in.

With PAYLOAD_ENCRYPTION_KEYS set, the producer encrypts each event's `payload` under its
user's data key before the record reaches Kafka, and the record's `payload` field holds
only an envelope:

    {"$encrypted": {"v": 1, "key": "<data key id>", "nonce": "<b64>", "ciphertext": "<b64>"}}

AES-256-GCM (`cryptography`'s AESGCM), a random 96-bit nonce per payload, the associated
data `"<userId>\\0<eventId>"`: a ciphertext opens only in the event it was made for.

A data key is 32 random bytes with a random id, kept in the shared Redis wrapped by the
current master key (AES-GCM again, associated data `"<userId>\\0<data key id>"`), as
`wrapped_form`. Erasing a user deletes it; every copy of the user's payloads (Kafka, the
DLQ, Redis, backups) then stays ciphertext for good. A record names the data key id it
was sealed under, so a record sealed under a deleted key is told apart from one under the
user's new key (created by the next event after the erasure).

Pure: no Redis here (`shared.data_keys` keeps the keys there).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENVELOPE_FIELD = "$encrypted"
ENVELOPE_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
# A master key id: short, printable, no separator of the setting's syntax.
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_DATA_KEY_ID_BYTES = 8


class PayloadKeyError(Exception):
    """A payload or data key that cannot be opened with the configured master keys: an
    unknown master key id, a master key other than the one that wrapped it, or bytes
    that were altered. Never retried: the same keys give the same answer."""


@dataclass(frozen=True)
class MasterKeys:
    """The master keys by id, in the setting's order: the first wraps new data keys,
    every one unwraps."""

    keys: tuple[tuple[str, bytes], ...]

    @property
    def current_id(self) -> str:
        return self.keys[0][0]

    def get(self, key_id: str) -> bytes | None:
        for kid, key in self.keys:
            if kid == key_id:
                return key
        return None

    def __repr__(self) -> str:
        return f"MasterKeys(ids={[kid for kid, _ in self.keys]!r})"


def parse_master_keys(text: str) -> MasterKeys:
    """`kid:base64key[,kid:base64key...]` (each key 32 bytes, standard base64; ids
    1-32 of `A-Z a-z 0-9 _ . -`, distinct) as MasterKeys. Raises ValueError saying what
    is wrong, never quoting a key."""
    keys: list[tuple[str, bytes]] = []
    for n, item in enumerate(text.split(","), 1):
        kid, sep, encoded = item.strip().partition(":")
        if not sep or not KEY_ID_PATTERN.fullmatch(kid):
            raise ValueError(
                f"item {n} must be `<id>:<base64 key>` with an id of 1-32 letters, digits, "
                "'_', '.' or '-'"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise ValueError(f"the key of id {kid!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"the key of id {kid!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                "(make one with `openssl rand -base64 32`)"
            )
        if any(kid == seen for seen, _ in keys):
            raise ValueError(f"the id {kid!r} is given twice")
        keys.append((kid, key))
    return MasterKeys(tuple(keys))


@dataclass(frozen=True)
class DataKey:
    """One user's unwrapped data key and its id."""

    id: str
    # Never printed: repr shows the id only.
    cipher: AESGCM = field(repr=False, compare=False)


def new_data_key() -> tuple[str, bytes]:
    """A fresh data key id and 32 random bytes."""
    return os.urandom(_DATA_KEY_ID_BYTES).hex(), AESGCM.generate_key(bit_length=256)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any) -> bytes:
    if type(text) is not str:
        raise PayloadKeyError("a field that must be base64 text is not text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise PayloadKeyError("a field that must be base64 is not") from None


def wrapped_form(master: MasterKeys, user_id: str, key_id: str, key: bytes) -> bytes:
    """What Redis keeps for a data key: compact JSON naming the master key id that wraps
    it, and the key AES-GCM-encrypted under that master key."""
    nonce = os.urandom(NONCE_BYTES)
    wrapped = AESGCM(master.keys[0][1]).encrypt(nonce, key, _wrap_aad(user_id, key_id))
    return orjson.dumps(
        {"master": master.current_id, "id": key_id, "nonce": _b64(nonce), "key": _b64(wrapped)}
    )


def unwrap(master: MasterKeys, user_id: str, stored: bytes) -> DataKey:
    """The data key `wrapped_form` made for `user_id`. Raises PayloadKeyError when its
    master key id is not configured, or the key does not open with it."""
    key_id, key = unwrap_bytes(master, user_id, stored)
    return DataKey(key_id, AESGCM(key))


def unwrap_bytes(master: MasterKeys, user_id: str, stored: bytes) -> tuple[str, bytes]:
    """`unwrap`'s id and key bytes (to wrap them again under another master key)."""
    try:
        form = orjson.loads(stored)
    except orjson.JSONDecodeError:
        raise PayloadKeyError("the stored data key is not JSON") from None
    if type(form) is not dict or type(form.get("id")) is not str:
        raise PayloadKeyError("the stored data key has no id")
    master_id = form.get("master")
    master_key = master.get(master_id) if type(master_id) is str else None
    if master_key is None:
        raise PayloadKeyError(
            f"the data key is wrapped by master key id {str(master_id)[:40]!r}, which "
            "PAYLOAD_ENCRYPTION_KEYS does not hold"
        )
    try:
        key = AESGCM(master_key).decrypt(
            _unb64(form.get("nonce")), _unb64(form.get("key")), _wrap_aad(user_id, form["id"])
        )
    except (InvalidTag, ValueError):
        raise PayloadKeyError(
            f"the data key does not open with master key id {master_id!r}: that id names "
            "another key than the one that wrapped it"
        ) from None
    return form["id"], key


def master_id_of(stored: bytes) -> str | None:
    """The master key id a stored data key names (None if it names none): for rewrapping."""
    try:
        form = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    master_id = form.get("master") if type(form) is dict else None
    return master_id if type(master_id) is str else None


def _wrap_aad(user_id: str, key_id: str) -> bytes:
    return f"{user_id}\0{key_id}".encode("utf-8", "surrogatepass")


def _payload_aad(user_id: str, event_id: str) -> bytes:
    return f"{user_id}\0{event_id}".encode("utf-8", "surrogatepass")


def seal(key: DataKey, user_id: str, event_id: str, payload_json: bytes) -> dict[str, Any]:
    """The envelope of a payload (its compact JSON) for event `event_id` of `user_id`."""
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = key.cipher.encrypt(nonce, payload_json, _payload_aad(user_id, event_id))
    return {
        ENVELOPE_FIELD: {
            "v": ENVELOPE_VERSION,
            "key": key.id,
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
        }
    }


@dataclass(frozen=True)
class Envelope:
    """A sealed payload, as read from a record."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


def envelope_of(payload: Mapping[str, Any]) -> Envelope | None:
    """The envelope `payload` is, or None when it is a plain payload (anything but a
    single `$encrypted` member). Raises PayloadKeyError for a `$encrypted` member that is
    not a well-formed envelope of a version we know."""
    if len(payload) != 1 or ENVELOPE_FIELD not in payload:
        return None
    body = payload[ENVELOPE_FIELD]
    if type(body) is not dict or body.get("v") != ENVELOPE_VERSION:
        raise PayloadKeyError(f"the payload's {ENVELOPE_FIELD} is not a version-1 envelope")
    key_id = body.get("key")
    if type(key_id) is not str or len(body) != 4:
        raise PayloadKeyError(f"the payload's {ENVELOPE_FIELD} is not a version-1 envelope")
    return Envelope(key_id, _unb64(body.get("nonce")), _unb64(body.get("ciphertext")))


def open_payload(key: DataKey, user_id: str, event_id: str, envelope: Envelope) -> bytes:
    """The payload's compact JSON. Raises PayloadKeyError when `key` is not the one it was
    sealed under, or the envelope was made for another event or altered."""
    if envelope.key_id != key.id:
        raise PayloadKeyError("the payload was sealed under another data key")
    try:
        return key.cipher.decrypt(
            envelope.nonce, envelope.ciphertext, _payload_aad(user_id, event_id)
        )
    except (InvalidTag, ValueError):
        raise PayloadKeyError(
            "the payload does not open with its data key: altered, or moved from another event"
        ) from None

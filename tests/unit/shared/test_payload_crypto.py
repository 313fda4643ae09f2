"""The envelope, the key wrapping and the data-key cache of payload encryption."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from shared.config import EncryptionSettings, read_settings, redacted
from shared.data_keys import DataKeys
from shared.errors import ConfigError
from shared.payload_crypto import (
    ENVELOPE_FIELD,
    DataKey,
    MasterKeys,
    PayloadKeyError,
    envelope_of,
    new_data_key,
    open_payload,
    parse_master_keys,
    seal,
    unwrap,
    wrapped_form,
)


def b64key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def master(*ids: str) -> MasterKeys:
    return parse_master_keys(",".join(f"{kid}:{b64key()}" for kid in ids))


def data_key(m: MasterKeys, user: str = "ann") -> DataKey:
    return unwrap(m, user, wrapped_form(m, user, *new_data_key()))


def test_master_keys_syntax_first_id_wraps() -> None:
    keys = master("k2", "k1")
    assert keys.current_id == "k2"
    assert keys.get("k1") is not None and keys.get("k3") is None
    assert "k1" in repr(keys) and base64.b64encode(keys.keys[0][1]).decode() not in repr(keys)


# Fixed keys, not random ones: the ids must be the same in every pytest-xdist worker.
K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(32, 64))).decode()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nocolon", "must be `<id>:<base64 key>`"),
        (f"bad id:{K1}", "must be `<id>:<base64 key>`"),
        ("k1:!!!!", "not valid base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "is 5 bytes; AES-256 needs 32"),
        (f"k1:{K1},k1:{K2}", "given twice"),
        (f"k1:{K1},", "item 2"),
    ],
)
def test_bad_master_keys_are_refused_without_quoting_a_key(text: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_master_keys(text)
    assert words in str(caught.value)
    with pytest.raises(ConfigError, match="PAYLOAD_ENCRYPTION_KEYS") as config_error:
        read_settings(EncryptionSettings, {"PAYLOAD_ENCRYPTION_KEYS": text})
    secret = text.partition(":")[2].partition(",")[0]
    if len(secret) > 8:
        assert secret not in str(config_error.value)


def test_the_keys_are_redacted_where_settings_are_printed() -> None:
    key = b64key()
    settings = EncryptionSettings(payload_encryption_keys=f"k1:{key}")
    assert key not in repr(settings)
    assert redacted(settings)["payload_encryption_keys"] == "***"


def test_a_payload_round_trips_and_its_envelope_hides_it() -> None:
    key = data_key(master("k1"))
    plain = b'{"card":"4111-1111"}'
    envelope = seal(key, "ann", "e1", plain)
    assert set(envelope) == {ENVELOPE_FIELD}
    assert b"4111" not in repr(envelope).encode()
    opened = envelope_of(envelope)
    assert opened is not None and opened.key_id == key.id
    assert open_payload(key, "ann", "e1", opened) == plain


def test_a_ciphertext_opens_only_in_its_own_event_and_user() -> None:
    key = data_key(master("k1"))
    envelope = envelope_of(seal(key, "ann", "e1", b"{}"))
    assert envelope is not None
    for user, event in (("bob", "e1"), ("ann", "e2")):
        with pytest.raises(PayloadKeyError, match="moved from another event"):
            open_payload(key, user, event, envelope)


def test_another_data_key_does_not_open_it() -> None:
    m = master("k1")
    envelope = envelope_of(seal(data_key(m), "ann", "e1", b"{}"))
    assert envelope is not None
    with pytest.raises(PayloadKeyError, match="another data key"):
        open_payload(data_key(m), "ann", "e1", envelope)


@pytest.mark.parametrize(
    "payload",
    [{}, {"a": 1}, {ENVELOPE_FIELD: 1, "b": 2}, {"encrypted": {"v": 1}}],
)
def test_plain_payloads_are_not_envelopes(payload: dict[str, Any]) -> None:
    assert envelope_of(payload) is None


@pytest.mark.parametrize(
    "body",
    [
        1,
        {"v": 2, "key": "k", "nonce": "", "ciphertext": ""},
        {"v": 1, "key": 5, "nonce": "", "ciphertext": ""},
        {"v": 1, "key": "k", "nonce": "%%", "ciphertext": ""},
        {"v": 1, "key": "k", "nonce": "", "ciphertext": "", "extra": 1},
    ],
)
def test_malformed_envelopes_are_refused(body: Any) -> None:
    with pytest.raises(PayloadKeyError):
        envelope_of({ENVELOPE_FIELD: body})


def test_a_wrapped_key_opens_with_any_configured_master_key_of_its_id() -> None:
    old = master("k1")
    stored = wrapped_form(old, "ann", *new_data_key())
    rotated = MasterKeys((("k2", os.urandom(32)), *old.keys))
    assert unwrap(rotated, "ann", stored).id == unwrap(old, "ann", stored).id


def test_a_wrapped_key_says_which_master_key_is_missing_or_wrong() -> None:
    stored = wrapped_form(master("k1"), "ann", *new_data_key())
    with pytest.raises(PayloadKeyError, match="master key id 'k1', which"):
        unwrap(master("k2"), "ann", stored)
    with pytest.raises(PayloadKeyError, match="names another key"):
        unwrap(master("k1"), "ann", stored)


def test_a_wrapped_key_is_bound_to_its_user() -> None:
    m = master("k1")
    stored = wrapped_form(m, "ann", *new_data_key())
    with pytest.raises(PayloadKeyError):
        unwrap(m, "bob", stored)


class FakeRedis:
    """MGET, GET and SET NX over a dict: the commands `DataKeys` uses, for its cache
    rules; `erase` does what the erase script does to a data key."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.reads = 0

    def get(self, name: str) -> bytes | None:
        return self.data.get(name)

    def erase(self, user: str) -> None:
        del self.data[f"dk:{user}"]
        self.data["erasures"] = str(int(self.data.get("erasures", b"0")) + 1).encode()

    def mget(self, names: list[str]) -> list[bytes | None]:
        self.reads += 1
        return [self.data.get(n) for n in names]

    def pipeline(self, transaction: bool = False) -> FakeRedis:
        self._queued: list[bool] = []
        return self

    def set(self, name: str, value: bytes, nx: bool = False) -> None:
        fresh = name not in self.data
        if fresh:
            self.data[name] = value
        self._queued.append(fresh)

    def execute(self) -> list[bool]:
        return self._queued


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def keys_on(redis: FakeRedis, clock: Clock, m: MasterKeys, **kw: Any) -> DataKeys:
    return DataKeys(redis, m, lambda u: f"dk:{u}", "erasures", clock=clock, **kw)


def test_writers_share_one_key_per_user() -> None:
    redis, clock, m = FakeRedis(), Clock(), master("k1")
    first = keys_on(redis, clock, m).for_writing({"ann"})["ann"]
    second = keys_on(redis, clock, m).for_writing({"ann"})["ann"]
    assert first.id == second.id
    read = keys_on(redis, clock, m).for_reading({"ann", "bob"})
    assert isinstance(read["ann"], DataKey) and read["ann"].id == first.id
    assert read["bob"] is None


def test_a_deleted_key_is_used_for_writing_for_at_most_the_cache_time() -> None:
    redis, clock, m = FakeRedis(), Clock(), master("k1")
    keys = keys_on(redis, clock, m, cache_seconds=1.0)
    before = keys.for_writing({"ann"})["ann"]
    keys.for_writing({"bob"})
    redis.erase("ann")
    clock.now += 0.999
    assert keys.for_writing({"ann"})["ann"].id == before.id  # still in the window
    clock.now += 0.001
    after = keys.for_writing({"ann"})["ann"]
    assert after.id != before.id  # the window is over: a new key, stored
    assert redis.data["dk:ann"]


def test_without_an_erasure_the_cache_is_not_read_again() -> None:
    redis, clock, m = FakeRedis(), Clock(), master("k1")
    keys = keys_on(redis, clock, m, cache_seconds=1.0)
    keys.for_writing({"ann"})
    reads = redis.reads
    clock.now += 3600
    keys.for_writing({"ann"})
    assert redis.reads == reads


def test_at_zero_an_erasure_is_seen_by_the_next_call() -> None:
    redis, clock, m = FakeRedis(), Clock(), master("k1")
    keys = keys_on(redis, clock, m, cache_seconds=0)
    before = keys.for_writing({"ann"})["ann"]
    redis.erase("ann")
    assert keys.for_writing({"ann"})["ann"].id != before.id


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    redis, clock, m = FakeRedis(), Clock(), master("k1")
    keys = keys_on(redis, clock, m, cache_size=2)
    keys.for_writing({"a"})
    keys.for_writing({"b"})
    keys.for_writing({"a"})  # a is now the most recent
    keys.for_writing({"c"})  # b leaves
    reads = redis.reads
    keys.for_writing({"a"})
    keys.for_writing({"c"})
    assert redis.reads == reads
    keys.for_writing({"b"})
    assert redis.reads == reads + 1


def test_a_key_that_does_not_open_is_reported_per_user() -> None:
    redis, clock = FakeRedis(), Clock()
    keys_on(redis, clock, master("k1")).for_writing({"ann"})
    answer = keys_on(redis, clock, master("k1")).for_reading({"ann", "bob"})
    assert isinstance(answer["ann"], PayloadKeyError)
    assert answer["bob"] is None


def test_a_key_read_before_the_cache_was_emptied_is_not_cached() -> None:
    redis, clock, m = FakeRedis(), Clock(), master("k1")
    keys = keys_on(redis, clock, m, cache_seconds=1.0)
    keys.for_writing({"ann"})
    stale = keys_on(redis, clock, m).for_writing({"bob"})["bob"]
    redis.erase("bob")
    clock.now += 1.0
    # bob's old key, as a read that was under way during the erasure got it.
    _, missing, epoch = keys._cached({"bob"})  # the check empties the cache here
    assert missing == ["bob"]
    keys._remember("bob", stale, epoch - 1)
    assert keys.for_writing({"bob"})["bob"].id != stale.id

"""The bound on what a dead letter carries (pipeline.dlq): pure, no Kafka."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer_service.pipeline.dlq import (
    FACTS_MAX_BYTES,
    PRODUCER_MAX_MESSAGE_BYTES,
    DeadLetter,
    LetterRecord,
    bounded,
    dlq_headers,
    facts_only,
    headers_digest,
)

LIMIT = PRODUCER_MAX_MESSAGE_BYTES
BROKER_LIMIT = 1_048_588  # what the broker accepts by default: a raw writer's ceiling


def letter(
    key: bytes | None = b"user-1",
    value: bytes | None = b"notjson",
    headers: tuple[tuple[str, bytes], ...] = (),
) -> DeadLetter:
    return DeadLetter(key, value, headers, "not_json", "bad", "events", 3, 42)


def named(record: LetterRecord) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, value in record.headers:
        assert isinstance(value, bytes)
        out[name] = value
    return out


def originals(record: LetterRecord) -> list[tuple[str, str | bytes | None]]:
    return [(k, v) for k, v in record.headers if not k.startswith("dlq.")]


def test_a_letter_that_fits_goes_whole() -> None:
    small = letter(headers=(("trace", b"t-1"),))
    record = bounded(small, "g", LIMIT)
    assert (record.key, record.value, record.cut) == (b"user-1", b"notjson", ())
    assert record.headers == dlq_headers(small, "g")
    assert "dlq.cut" not in named(record)


def test_a_megabyte_of_headers_keeps_a_prefix_and_describes_the_rest() -> None:
    headers = tuple((f"h{i}", b"x" * 104_000) for i in range(10))
    record = bounded(letter(headers=headers), "g", LIMIT)
    assert record.wire_bytes <= LIMIT
    assert (record.key, record.value, record.cut) == (b"user-1", b"notjson", ("headers",))
    kept = originals(record)
    assert kept == list(headers[: len(kept)])
    assert len(kept) == 2  # a quarter of the budget: 248,976 bytes
    facts = named(record)
    assert facts["dlq.cut"] == b"headers"
    assert facts["dlq.cut.headers.count"] == b"8"
    assert facts["dlq.cut.headers.bytes"] == str(8 * 104_002).encode()
    assert facts["dlq.cut.headers.sha256"] == headers_digest(headers[2:]).encode()
    assert facts["dlq.source.offset"] == b"42"


def test_the_headers_digest_is_the_documented_one() -> None:
    # Each name and value preceded by its length, 4 bytes big-endian (docs/consumer.md).
    expected = hashlib.sha256(b"\0\0\0\x01a\0\0\0\x02bc\0\0\0\x00\0\0\0\x00").hexdigest()
    assert headers_digest((("a", b"bc"), ("", b""))) == expected
    # The length prefixes tell ("ab", "c") from ("a", "bc").
    assert headers_digest((("ab", b"c"),)) != headers_digest((("a", b"bc"),))


def test_a_huge_key_is_cut_and_the_rest_kept() -> None:
    key = b"k" * (BROKER_LIMIT - 200)
    record = bounded(letter(key=key, headers=(("trace", b"1"),)), "g", LIMIT)
    assert record.wire_bytes <= LIMIT
    assert (record.key, record.value, record.cut) == (None, b"notjson", ("key",))
    assert originals(record) == [("trace", b"1")]
    facts = named(record)
    assert facts["dlq.cut.key.bytes"] == str(len(key)).encode()
    assert facts["dlq.cut.key.sha256"] == hashlib.sha256(key).hexdigest().encode()


def test_a_huge_value_is_cut_and_the_rest_kept() -> None:
    value = b"{" * (BROKER_LIMIT - 200)
    record = bounded(letter(value=value), "g", LIMIT)
    assert record.wire_bytes <= LIMIT
    assert (record.key, record.value, record.cut) == (b"user-1", None, ("value",))
    facts = named(record)
    assert facts["dlq.cut.value.bytes"] == str(len(value)).encode()
    assert facts["dlq.cut.value.sha256"] == hashlib.sha256(value).hexdigest().encode()


def test_thousands_of_tiny_headers_are_counted_with_their_framing() -> None:
    # Each costs more on the wire than its two bytes: the framing is what must be counted.
    headers = tuple(("h", b"") for _ in range(120_000))
    record = bounded(letter(headers=headers), "g", LIMIT)
    assert record.wire_bytes <= LIMIT
    assert record.cut == ("headers",)
    kept = len(originals(record))
    assert 0 < kept < len(headers)
    assert named(record)["dlq.cut.headers.count"] == str(len(headers) - kept).encode()


def test_a_value_keeps_what_the_key_and_headers_leave() -> None:
    value = b"v" * 600_000
    record = bounded(letter(value=value), "g", LIMIT)
    assert record.value == value and record.cut == ()
    crowded = letter(key=b"k" * 240_000, value=value, headers=(("h", b"x" * 240_000),))
    record = bounded(crowded, "g", LIMIT)
    assert record.wire_bytes <= LIMIT
    assert (record.key, record.value, record.cut) == (crowded.key, None, ("value",))


def test_facts_only_holds_no_original_part_and_fits_whatever_the_inputs() -> None:
    extreme = DeadLetter(
        key=b"k" * BROKER_LIMIT,
        value=b"v" * BROKER_LIMIT,
        headers=tuple((f"h{i}" * 1000, b"x" * 100) for i in range(1000)),
        reason="processing_error" * 100,
        message="€\ud800" * 1_000_000,
        topic="t" * 10_000,
        partition=2**31 - 1,
        offset=2**63 - 1,
    )
    record = facts_only(extreme, "g" * 100_000, "why " * 100_000)
    assert (record.key, record.value) == (None, None)
    assert originals(record) == []
    assert record.cut == ("key", "value", "headers")
    assert record.wire_bytes <= FACTS_MAX_BYTES
    facts = named(record)
    assert facts["dlq.cut"] == b"key,value,headers"
    assert facts["dlq.cut.headers.count"] == b"1000"
    assert facts["dlq.source.offset"] == str(2**63 - 1).encode()
    assert facts["dlq.facts.only"].startswith(b"why ")


def test_facts_only_names_only_the_parts_the_record_had() -> None:
    record = facts_only(letter(key=None, value=b"v"), "g", "refused")
    assert record.cut == ("value",)
    assert "dlq.cut.key.bytes" not in named(record)
    assert "dlq.cut.headers.count" not in named(record)


sizes = st.integers(min_value=0, max_value=BROKER_LIMIT)


@settings(max_examples=200, deadline=None)
@given(
    key=st.one_of(st.none(), sizes),
    value=st.one_of(st.none(), sizes),
    header_sizes=st.lists(st.integers(min_value=0, max_value=300_000), max_size=12),
    limit=st.integers(min_value=1, max_value=2 * BROKER_LIMIT),
)
def test_any_dead_letter_fits_the_limit_and_keeps_each_part_whole_or_described(
    key: int | None, value: int | None, header_sizes: list[int], limit: int
) -> None:
    headers = tuple((f"h{i}", b"x" * n) for i, n in enumerate(header_sizes))
    original = letter(
        key=None if key is None else b"k" * key,
        value=None if value is None else b"v" * value,
        headers=headers,
    )
    record = bounded(original, "group", limit)
    assert record.wire_bytes <= max(limit, FACTS_MAX_BYTES)
    facts = named(record)
    assert record.key in (original.key, None)
    assert record.value in (original.value, None)
    assert ("key" in record.cut) == (record.key is None and original.key is not None)
    assert ("value" in record.cut) == (record.value is None and original.value is not None)
    kept = originals(record)
    assert kept == list(headers[: len(kept)])
    assert ("headers" in record.cut) == (len(kept) < len(headers))
    if record.cut:
        assert facts["dlq.cut"] == ",".join(record.cut).encode()
    if "headers" in record.cut:
        assert facts["dlq.cut.headers.sha256"] == headers_digest(headers[len(kept) :]).encode()

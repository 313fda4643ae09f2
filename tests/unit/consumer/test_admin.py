"""The pure parts of pipeline-admin: terminal-safe text, --since, the progress bar, and
what a DLQ record's headers mean."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from consumer_service.admin.cli import main, parse_since
from consumer_service.admin.record import REPLAY_ATTEMPT, DeadLetterRecord
from consumer_service.admin.render import Progress, terminal_safe


def test_terminal_safe_escapes_controls_format_characters_and_invalid_utf8() -> None:
    assert terminal_safe(b"a\x1b[31mb\x07\r\n\xff\xc3") == "a\\x1b[31mb\\x07\\x0d\\x0a\\xff\\xc3"
    assert terminal_safe("rtl\u202eltr\u2028\x85") == "rtl\\u202eltr\\u2028\\x85"
    assert terminal_safe("é ü 日本 🙂") == "é ü 日本 🙂"
    assert terminal_safe(None) == "(none)"


def test_terminal_safe_truncates_and_says_how_much_was_cut() -> None:
    assert terminal_safe(b"x" * 10, 4) == "xxxx… (+6 bytes)"
    assert terminal_safe("y" * 5, 5) == "yyyyy"
    # A cut through a multi-byte character shows its bytes, never a broken glyph.
    assert terminal_safe("é".encode(), 1) == "\\xc3… (+1 bytes)"


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_parse_since() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == int(
        datetime(2026, 11, 25, 10, 30, tzinfo=UTC).timestamp() * 1000
    )
    assert parse_since("2d", now) == int(datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("2026-11-24T04:00:00Z") == 1795492800000
    assert parse_since("2026-11-24T05:00:00+01:00") == 1795492800000
    assert parse_since("2026-11-24T04:00:00") == 1795492800000  # no offset: UTC
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only() -> None:
    tty = Terminal()
    bar = Progress(3, "replaying", tty)
    for _ in range(3):
        bar.advance()
    bar.close()
    assert tty.getvalue().startswith("\rreplaying [")
    assert tty.getvalue().endswith("3/3 100%\n")

    pipe = io.StringIO()
    bar = Progress(3, "replaying", pipe)
    for _ in range(3):
        bar.advance()
    bar.close()
    assert pipe.getvalue() == ""


def test_a_dead_letter_record_reads_the_workers_headers_not_the_originals() -> None:
    rec = DeadLetterRecord(
        partition=0,
        offset=5,
        timestamp_ms=None,
        key=b"k",
        value=b"{}",
        headers=(
            ("eventType", b"LOGIN"),
            (REPLAY_ATTEMPT, b"2"),
            # An original header that happens to share a dlq.* name: the worker's own,
            # appended after the originals, wins.
            ("dlq.error.type", b"forged"),
            ("dlq.error.type", b"too_large"),
            ("dlq.source.partition", b"4"),
            ("dlq.source.offset", b"oops"),
        ),
    )
    assert rec.reason == "too_large"
    assert rec.source_partition == 4
    assert rec.source_offset is None
    assert rec.replay_attempt == 2
    assert rec.original_headers() == (("eventType", b"LOGIN"),)


def test_a_malformed_bootstrap_option_is_a_usage_error() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["dlq", "summary", "--bootstrap", "broker:http"], env={}, out=out, err=err) == 2
    assert err.getvalue().startswith("pipeline-admin: KAFKA_BOOTSTRAP_SERVERS item 'broker:http'")


def test_a_dead_letter_record_says_which_parts_of_the_original_were_cut() -> None:
    def rec(*headers: tuple[str, bytes]) -> DeadLetterRecord:
        return DeadLetterRecord(0, 0, None, None, None, headers)

    assert rec().cut == ()
    assert rec(("dlq.cut", b"headers")).cut == ("headers",)
    assert rec(("dlq.cut", b"key,value,headers")).cut == ("key", "value", "headers")
    # An original header cannot hide a cut: the worker's own comes last and wins, and a
    # forged one alone only keeps a whole record from being replayed.
    assert rec(("dlq.cut", b""), ("dlq.cut", b"value")).cut == ("value",)

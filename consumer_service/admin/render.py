"""Showing DLQ records and the tools' reports on a terminal: every byte that came from
Kafka is escaped first (`terminal_safe`), since a record may carry escape sequences."""

from __future__ import annotations

import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from consumer_service.admin.record import REPLAY_ATTEMPT, DeadLetterRecord
from consumer_service.admin.replay import ReplayReport

# Characters a terminal may act on instead of print: C0/C1 controls (escape sequences),
# format characters (bidi overrides), and line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def terminal_safe(data: bytes | str | None, limit: int | None = None) -> str:
    """`data` as one line that is safe to print: bytes that are not UTF-8 become `\\xNN`,
    control and format characters become `\\xNN`/`\\uNNNN` escapes. With `limit`, only
    the first `limit` bytes (or characters) are shown, followed by how many were cut."""
    if data is None:
        return "(none)"
    cut = 0
    if limit is not None and len(data) > limit:
        cut = len(data) - limit
        data = data[:limit]
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    out = []
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(_escape(ord(ch)))
        else:
            out.append(ch)
    unit = "bytes" if isinstance(data, bytes) else "characters"
    return "".join(out) + (f"… (+{cut} {unit})" if cut else "")


def _escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def format_time(ms: int | None) -> str:
    if ms is None:
        return "(no timestamp)"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Progress:
    """A one-line progress bar on `stream`, drawn only when it is a terminal (so a log
    file or a pipe gets the final report and nothing else). At most 10 redraws a second."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() and total > 0
        self._total = total
        self._label = label
        self._done = 0
        self._drawn_at = 0.0

    def advance(self, n: int = 1) -> None:
        self._done += n
        now = time.monotonic()
        if self._enabled and (now - self._drawn_at >= 0.1 or self._done >= self._total):
            self._drawn_at = now
            share = min(1.0, self._done / self._total)
            bar = "#" * int(share * 30)
            self._stream.write(
                f"\r{self._label} [{bar:<30}] {self._done:,}/{self._total:,} {share:4.0%}"
            )
            self._stream.flush()

    def close(self) -> None:
        if self._enabled and self._drawn_at:
            self._stream.write("\n")
            self._stream.flush()


# -- summary ---------------------------------------------------------------------------


@dataclass
class Summary:
    """What the DLQ holds: counts by reason and by source partition, first and last."""

    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    oldest: DeadLetterRecord | None = None
    newest: DeadLetterRecord | None = None

    def add(self, rec: DeadLetterRecord) -> None:
        self.total += 1
        self.by_reason[rec.reason] += 1
        self.by_source[_source(rec)] += 1
        key = _age_key(rec)
        if self.oldest is None or key < _age_key(self.oldest):
            self.oldest = rec
        if self.newest is None or key > _age_key(self.newest):
            self.newest = rec


def _age_key(rec: DeadLetterRecord) -> tuple[int, int, int]:
    return (rec.timestamp_ms if rec.timestamp_ms is not None else -1, rec.partition, rec.offset)


def _source(rec: DeadLetterRecord) -> str:
    topic = rec.source_topic or "?"
    partition = "?" if rec.source_partition is None else str(rec.source_partition)
    return f"{terminal_safe(topic)}:{partition}"


def _describe(rec: DeadLetterRecord) -> str:
    source_offset = "?" if rec.source_offset is None else str(rec.source_offset)
    return (
        f"{format_time(rec.timestamp_ms)}  dlq {rec.partition}:{rec.offset}  "
        f"from {_source(rec)}@{source_offset}  {terminal_safe(rec.reason)}"
    )


def summarize(records: Iterator[DeadLetterRecord], progress: Progress) -> Summary:
    summary = Summary()
    for rec in records:
        summary.add(rec)
        progress.advance()
    return summary


def print_summary(summary: Summary, dlq_topic: str, out: TextIO) -> None:
    print(f"{dlq_topic}: {summary.total} dead-lettered record(s)", file=out)
    if not summary.total:
        return
    print("by reason:", file=out)
    for reason, n in sorted(summary.by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {terminal_safe(reason):<20} {n:>10,}", file=out)
    print("by source partition:", file=out)
    for source, n in sorted(summary.by_source.items(), key=lambda kv: _source_order(kv[0])):
        print(f"  {source:<40} {n:>10,}", file=out)
    assert summary.oldest is not None and summary.newest is not None
    print(f"oldest: {_describe(summary.oldest)}", file=out)
    print(f"newest: {_describe(summary.newest)}", file=out)


def _source_order(source: str) -> tuple[str, int]:
    topic, _, partition = source.rpartition(":")
    return (topic, int(partition) if partition.isdigit() else -1)


# -- show and replay -------------------------------------------------------------------


def print_record(rec: DeadLetterRecord, value_limit: int, out: TextIO) -> None:
    print(f"--- {_describe(rec)}", file=out)
    print(f"  key: {terminal_safe(rec.key, 200)}", file=out)
    for name, value in rec.dlq_headers():
        print(f"  {terminal_safe(name)}: {terminal_safe(value, 1000)}", file=out)
    if rec.replay_attempt:
        print(f"  {REPLAY_ATTEMPT}: {rec.replay_attempt}", file=out)
    size = "no value" if rec.value is None else f"{len(rec.value):,} bytes"
    print(f"  value ({size}): {terminal_safe(rec.value, value_limit)}", file=out)


def print_replay(report: ReplayReport, topic: str, dry_run: bool, out: TextIO) -> None:
    verb = "would publish" if dry_run else "published"
    print(f"selected {report.selected:,}; {verb} {report.published:,} to {topic}", file=out)
    if report.unacknowledged:
        print(f"NOT acknowledged by Kafka: {report.unacknowledged:,} (run again)", file=out)
    if report.left_in_dlq:
        print(f"left in the DLQ: {report.left_in_dlq:,}", file=out)
        for why, n in sorted(report.still_failing.items()):
            print(f"  still {why}: {n:,}", file=out)
        if report.gave_up:
            print(f"  reached --max-attempts: {report.gave_up:,}", file=out)
        if report.incomplete:
            print(f"  only part of the original kept: {report.incomplete:,}", file=out)
        for rec, why in report.left:
            print(f"  {_describe(rec)}  {terminal_safe(why, 300)}", file=out)
        if report.left_in_dlq > len(report.left):
            print(f"  ... and {report.left_in_dlq - len(report.left):,} more", file=out)

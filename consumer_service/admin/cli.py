"""`pipeline-admin`: operator tools for the dead-letter topic.

    pipeline-admin dlq summary                       counts by reason and source partition
    pipeline-admin dlq show [--reason R] [--limit N] the records, their dlq.* headers, values
    pipeline-admin dlq replay [--reason R] [--since T] [--dry-run]

Settings come from the services' environment (KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC, the
KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_CA_LOCATION of a secured cluster, and
CONSUMER_MAX_MESSAGE_BYTES for the replay's check); `--bootstrap` and `--topic` override
them. The DLQ is `<topic>.dlq`.

Reading never disturbs the pipeline: the tools assign the DLQ's partitions explicitly
(no group membership, no rebalance), never commit an offset, and read only up to the high
watermarks taken at start, so records appended meanwhile, by the worker or by a replay,
are not read.

Replay contract:

* A selected record is checked with the consumer's own rules (`processing.decide`) first.
  One that still fails is NOT published: it stays where it is, in the DLQ with its
  original reason, and is reported. It is not written to the DLQ again, so the DLQ does
  not grow on every run and a later run does not see it twice.
* One that passes is produced to the main topic with its key, value (so its eventId) and
  original headers, without the dlq.* ones, plus `replay.attempt` (1 on its first replay).
  Idempotent producer, acks=all. The consumer dedups by eventId, so replaying a record
  twice stores its event once (within CONSUMER_DEDUP_TTL_SECONDS).
* A replayed record the consumer still rejects (its settings differ from the ones the
  replay checked with) is dead-lettered by the consumer with its `replay.attempt` kept
  among the original headers. Such a record is not replayed again once it reached
  `--max-attempts`, so no record cycles between the topics.

Exit status: 0 done; 1 Kafka did not answer, a topic is missing, or the broker did not
acknowledge every replayed record (running the replay again is safe); 2 bad arguments or
settings, including credentials the broker refused; 3 replay finished, but some selected
records still fail (or reached --max-attempts) and were left in the DLQ.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, TopicMetadata  # type: ignore[attr-defined]

from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Decision, Rejected, decide, safe_text
from consumer_service.topics import TopicMissing, topic_metadata
from shared.config import CommonSettings
from shared.errors import ConfigError, PipelineError, Unavailable
from shared.kafka import AuthenticationWatch, client_config, describe
from shared.logs import configure_logging

EXIT_OK = 0
EXIT_KAFKA = 1
EXIT_USAGE = 2
EXIT_STILL_FAILING = 3

DLQ_PREFIX = "dlq."
REPLAY_ATTEMPT = "replay.attempt"
DEFAULT_MAX_ATTEMPTS = 3
UNKNOWN_REASON = "unknown"

Headers = tuple[tuple[str, bytes], ...]


class AdminError(PipelineError):
    """The tool cannot do what was asked (a topic is missing, Kafka refused); exit 1."""


# -- reading the DLQ -----------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of the DLQ, with its dlq.* headers read out."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> bytes | None:
        """The last value of header `name` (the consumer appends its dlq.* headers after
        the original ones, so the last one is its own), or None."""
        found: bytes | None = None
        for k, v in self.headers:
            if k == name:
                found = v
        return found

    def _text(self, name: str) -> str | None:
        raw = self.header(name)
        return None if raw is None else raw.decode("utf-8", "backslashreplace")

    def _int(self, name: str) -> int | None:
        text = self._text(name)
        try:
            return None if text is None else int(text)
        except ValueError:
            return None

    @property
    def reason(self) -> str:
        return self._text("dlq.error.type") or UNKNOWN_REASON

    @property
    def source_topic(self) -> str | None:
        return self._text("dlq.source.topic")

    @property
    def source_partition(self) -> int | None:
        return self._int("dlq.source.partition")

    @property
    def source_offset(self) -> int | None:
        return self._int("dlq.source.offset")

    @property
    def replay_attempt(self) -> int:
        """How many times this record was replayed before it came back to the DLQ."""
        return max(0, self._int(REPLAY_ATTEMPT) or 0)

    def original_headers(self) -> Headers:
        """The headers it had on the main topic: without dlq.* and replay.attempt."""
        return tuple(
            (k, v) for k, v in self.headers if not k.startswith(DLQ_PREFIX) and k != REPLAY_ATTEMPT
        )

    def dlq_headers(self) -> Headers:
        return tuple((k, v) for k, v in self.headers if k.startswith(DLQ_PREFIX))


def _headers_of(raw: Any) -> Headers:
    items = raw.items() if isinstance(raw, dict) else (raw or [])
    return tuple((k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in items)


def _kafka_config(
    connection: CommonSettings | str, role: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return client_config(
        connection,
        {
            # Our own Kafka errors are reported in plain words; librdkafka's retries of an
            # unreachable broker would otherwise flood the terminal.
            "log_level": 2,
            **(role or {}),
        },
    )


def existing_topic(
    client: Any,
    connection: CommonSettings | str,
    watch: AuthenticationWatch,
    timeout: float,
    topic: str,
    *,
    missing: str,
) -> TopicMetadata:
    """`topic_metadata` in the tool's terms: raises AdminError(`missing`) when the topic
    is not there, Unavailable when Kafka does not answer in time, and
    KafkaAuthenticationFailed (at once) when it refuses the credentials."""
    try:
        return topic_metadata(client, connection, watch, timeout, topic)
    except TopicMissing:
        raise AdminError(missing) from None
    except KafkaException as exc:
        raise Unavailable(f"Kafka at {describe(connection)} did not answer: {exc}") from exc


class DlqScan:
    """The DLQ's records as they are at the moment of `open()`, partition by partition in
    offset order. A context manager; `total` is how many records lie ahead (an upper
    bound when `since_ms` is set, as timestamps need not grow with offsets). `connection`
    is the Kafka settings (a bare bootstrap address means PLAINTEXT)."""

    def __init__(
        self,
        connection: CommonSettings | str,
        topic: str,
        *,
        since_ms: int | None,
        timeout: float,
    ):
        self._connection = connection
        self._topic = topic
        self._since_ms = since_ms
        self._timeout = timeout
        self._consumer: Consumer | None = None
        self._ranges: dict[int, tuple[int, int]] = {}

    def __enter__(self) -> DlqScan:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def total(self) -> int:
        return sum(high - start for start, high in self._ranges.values())

    def open(self) -> None:
        """Fix the range to read: from the low watermark (or the first offset at or after
        `since_ms`) to the high watermark, per partition. Raises AdminError when the topic
        is missing, Unavailable when Kafka does not answer within the timeout,
        KafkaAuthenticationFailed (at once) when it refuses the credentials."""
        watch = AuthenticationWatch()
        consumer = Consumer(
            _kafka_config(
                self._connection,
                {
                    # Required by the client, never used: partitions are assigned, not
                    # subscribed, and no offset is ever committed, so this group never
                    # exists on the broker and the pipeline's own group is never touched.
                    "group.id": f"pipeline-admin-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "error_cb": watch,
                },
            )
        )
        self._consumer = consumer
        try:
            meta = existing_topic(
                consumer,
                self._connection,
                watch,
                self._timeout,
                self._topic,
                missing=f"the dead-letter topic {self._topic} does not exist",
            )
            partitions = sorted(meta.partitions)
            ranges: dict[int, tuple[int, int]] = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=self._timeout
                )
                ranges[p] = (low, high)
            if self._since_ms is not None:
                found = consumer.offsets_for_times(
                    [TopicPartition(self._topic, p, self._since_ms) for p in partitions],
                    timeout=self._timeout,
                )
                for tp in found:
                    low, high = ranges[tp.partition]
                    # A negative offset: no record that new in this partition.
                    start = high if tp.offset < 0 else max(low, min(tp.offset, high))
                    ranges[tp.partition] = (start, high)
        except KafkaException as exc:
            raise Unavailable(
                f"Kafka at {describe(self._connection)} did not answer: {exc}"
            ) from exc
        self._ranges = {p: r for p, r in ranges.items() if r[0] < r[1]}

    def __iter__(self) -> Iterator[DeadLetterRecord]:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("DlqScan.open() first")
        pending = dict(self._ranges)
        if not pending:
            return
        consumer.assign(
            [TopicPartition(self._topic, p, start) for p, (start, _) in pending.items()]
        )
        last_progress = time.monotonic()
        while pending:
            messages = consumer.consume(500, 0.5)
            if not messages and time.monotonic() - last_progress > self._timeout:
                raise Unavailable(
                    f"no record from {self._topic} for {self._timeout:.0f} s with "
                    f"{len(pending)} partition(s) still to read"
                )
            for msg in messages:
                p = msg.partition()
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._done(pending, p)
                    elif err.fatal():
                        raise Unavailable(f"reading {self._topic} failed: {err}")
                    continue
                last_progress = time.monotonic()
                offset = int(msg.offset() or 0)
                if p not in pending or offset >= pending[p][1]:
                    self._done(pending, p)  # appended after we started: not ours to read
                    continue
                ts_type, ts = msg.timestamp()
                key = msg.key()
                record = DeadLetterRecord(
                    partition=int(p or 0),
                    offset=offset,
                    timestamp_ms=ts if ts_type != 0 and ts >= 0 else None,
                    key=key.encode() if isinstance(key, str) else key,
                    value=msg.value(),
                    headers=_headers_of(msg.headers()),
                )
                if offset >= pending[p][1] - 1:
                    self._done(pending, p)
                if self._since_ms is None or (
                    record.timestamp_ms is not None and record.timestamp_ms >= self._since_ms
                ):
                    yield record

    def _done(self, pending: dict[int, tuple[int, int]], partition: int | None) -> None:
        if partition in pending:
            del pending[partition]
            consumer = self._consumer
            if consumer is not None:
                consumer.incremental_unassign([TopicPartition(self._topic, partition)])

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


# -- showing it safely -----------------------------------------------------------------

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


_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> int:
    """`--since` to epoch milliseconds: an ISO 8601 date-time (without an offset it is
    UTC), a date, or a duration ago such as `90m`, `6h`, `2d`. Raises ValueError."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        now = now or datetime.now(UTC)
        then = now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            then = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"--since must be an ISO 8601 time (2026-11-24T04:00:00Z) or a duration "
                f"ago (90m, 6h, 2d), got {text!r}"
            ) from None
        if then.tzinfo is None:
            then = then.replace(tzinfo=UTC)
    return int(then.timestamp() * 1000)


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


# -- summary -----------------------------------------------------------------------------


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


# -- show --------------------------------------------------------------------------------


def print_record(rec: DeadLetterRecord, value_limit: int, out: TextIO) -> None:
    print(f"--- {_describe(rec)}", file=out)
    print(f"  key: {terminal_safe(rec.key, 200)}", file=out)
    for name, value in rec.dlq_headers():
        print(f"  {terminal_safe(name)}: {terminal_safe(value, 1000)}", file=out)
    if rec.replay_attempt:
        print(f"  {REPLAY_ATTEMPT}: {rec.replay_attempt}", file=out)
    size = "no value" if rec.value is None else f"{len(rec.value):,} bytes"
    print(f"  value ({size}): {terminal_safe(rec.value, value_limit)}", file=out)


# -- replay ------------------------------------------------------------------------------


@dataclass
class ReplayReport:
    """What a replay did. `published` counts records the broker acknowledged (or, under
    --dry-run, records that would have been published)."""

    selected: int = 0
    published: int = 0
    still_failing: Counter[str] = field(default_factory=Counter)
    gave_up: int = 0
    unacknowledged: int = 0
    left: list[str] = field(default_factory=list)

    @property
    def left_in_dlq(self) -> int:
        return sum(self.still_failing.values()) + self.gave_up


# How many of the records left in the DLQ are named one by one in the report.
LEFT_LISTED = 20


def check(rec: DeadLetterRecord, max_bytes: int) -> Decision:
    """The consumer's verdict on the record today, with the worker's safety net: rules
    that raise mean `processing_error`, as they would in the worker."""
    partition = rec.source_partition if rec.source_partition is not None else rec.partition
    offset = rec.source_offset if rec.source_offset is not None else rec.offset
    try:
        return decide(rec.value, partition, offset, max_bytes)
    except Exception as exc:
        return Rejected(
            "processing_error",
            safe_text(f"Unexpected error while processing the record: {exc!r}"),
            partition,
            offset,
        )


class Republisher:
    """An idempotent acks=all producer to the main topic that counts acknowledgements."""

    def __init__(self, connection: CommonSettings | str, topic: str, timeout: float) -> None:
        self._topic = topic
        self._timeout = timeout
        self.acknowledged = 0
        self.failed: list[str] = []
        self._producer = Producer(
            _kafka_config(
                connection,
                {
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.timeout.ms": int(timeout * 1000),
                },
            )
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.acknowledged += 1
        else:
            self.failed.append(str(err))

    def publish(self, rec: DeadLetterRecord) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            *rec.original_headers(),
            (REPLAY_ATTEMPT, str(rec.replay_attempt + 1).encode()),
        ]
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    key=rec.key,
                    value=rec.value,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: serve deliveries, then retry
            except KafkaException as exc:
                self.failed.append(str(exc))
                return
        self._producer.poll(0)

    def finish(self) -> int:
        """Wait for every acknowledgement; returns how many records were not delivered."""
        remaining = int(self._producer.flush(self._timeout))
        return remaining + len(self.failed)


def replay(
    scan: DlqScan,
    *,
    reason: str | None,
    max_bytes: int,
    max_attempts: int,
    publisher: Republisher | None,
    progress: Progress,
) -> ReplayReport:
    """Re-publish the scan's records that the consumer's rules accept today (all of them
    counted, none published, when `publisher` is None: the dry run)."""
    report = ReplayReport()
    for rec in scan:
        progress.advance()
        if reason is not None and rec.reason != reason:
            continue
        report.selected += 1
        if rec.replay_attempt >= max_attempts:
            report.gave_up += 1
            _note_left(report, rec, f"replayed {rec.replay_attempt} time(s) already")
            continue
        verdict = check(rec, max_bytes)
        if isinstance(verdict, Rejected):
            report.still_failing[verdict.reason] += 1
            _note_left(report, rec, f"still {verdict.reason}: {verdict.message}")
            continue
        if publisher is None:
            report.published += 1
        else:
            publisher.publish(rec)
    if publisher is not None:
        report.unacknowledged = publisher.finish()
        report.published = publisher.acknowledged
    return report


def _note_left(report: ReplayReport, rec: DeadLetterRecord, why: str) -> None:
    if len(report.left) < LEFT_LISTED:
        report.left.append(f"{_describe(rec)}  {terminal_safe(why, 300)}")


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
        for line in report.left:
            print(f"  {line}", file=out)
        if report.left_in_dlq > len(report.left):
            print(f"  ... and {report.left_in_dlq - len(report.left):,} more", file=out)


# -- the command line --------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline-admin",
        description="Operator tools for the user-activity pipeline.",
        epilog="Exit status: 0 done; 1 Kafka error or missing topic; 2 bad arguments or "
        "settings; 3 replay left records that still fail in the DLQ.",
    )
    commands = parser.add_subparsers(dest="area", required=True)
    dlq = commands.add_parser("dlq", help="inspect and replay the dead-letter topic")
    actions = dlq.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
        p.add_argument("--topic", help="the main topic (KAFKA_TOPIC); the DLQ is <topic>.dlq")
        p.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            help="seconds to wait for Kafka before giving up (default 30)",
        )

    summary = actions.add_parser("summary", help="counts by reason and by source partition")
    common(summary)

    show = actions.add_parser("show", help="the records, their dlq.* headers and values")
    common(show)
    show.add_argument("--reason", help="only records dead-lettered for this reason")
    show.add_argument("--since", help="only records dead-lettered since (ISO 8601, or 6h, 2d)")
    show.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    show.add_argument(
        "--value-bytes", type=int, default=300, help="show this much of each value (default 300)"
    )

    rep = actions.add_parser("replay", help="re-publish records the consumer now accepts")
    common(rep)
    rep.add_argument("--reason", help="only records dead-lettered for this reason")
    rep.add_argument("--since", help="only records dead-lettered since (ISO 8601, or 6h, 2d)")
    rep.add_argument("--dry-run", action="store_true", help="check and count, publish nothing")
    rep.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="leave records already replayed this often (default %(default)s)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed why
        return int(exc.code or 0) and EXIT_USAGE
    try:
        settings = ConsumerSettings.from_env(env)
        since = parse_since(args.since) if getattr(args, "since", None) else None
        for name in ("limit", "value_bytes", "max_attempts"):
            if getattr(args, name, 1) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    except (ConfigError, ValueError) as exc:
        print(f"pipeline-admin: {exc}", file=err)
        return EXIT_USAGE
    configure_logging("WARNING", service="pipeline-admin")
    connection = settings.common
    if args.bootstrap:
        connection = dataclasses.replace(connection, kafka_bootstrap_servers=args.bootstrap)
    topic = args.topic or settings.common.kafka_topic
    dlq_topic = f"{topic}.dlq"
    try:
        with DlqScan(connection, dlq_topic, since_ms=since, timeout=args.timeout) as scan:
            if args.action == "summary":
                progress = Progress(scan.total, "reading", err)
                summary = summarize(iter(scan), progress)
                progress.close()
                print_summary(summary, dlq_topic, out)
                return EXIT_OK
            if args.action == "show":
                shown = 0
                for rec in scan:
                    if args.reason is not None and rec.reason != args.reason:
                        continue
                    print_record(rec, args.value_bytes, out)
                    shown += 1
                    if shown >= args.limit:
                        break
                print(f"{shown} record(s) shown from {dlq_topic}", file=out)
                return EXIT_OK
            _require_topic(connection, topic, args.timeout)
            publisher = None if args.dry_run else Republisher(connection, topic, args.timeout)
            progress = Progress(scan.total, "replaying", err)
            report = replay(
                scan,
                reason=args.reason,
                max_bytes=settings.max_message_bytes,
                max_attempts=args.max_attempts,
                publisher=publisher,
                progress=progress,
            )
            progress.close()
            print_replay(report, topic, args.dry_run, out)
            if report.unacknowledged:
                return EXIT_KAFKA
            return EXIT_STILL_FAILING if report.left_in_dlq else EXIT_OK
    except (AdminError, Unavailable) as exc:
        print(f"pipeline-admin: {exc}", file=err)
        return EXIT_KAFKA
    except ConfigError as exc:  # the broker refused the credentials
        print(f"pipeline-admin: {exc}", file=err)
        return EXIT_USAGE


def _require_topic(connection: CommonSettings | str, topic: str, timeout: float) -> None:
    """Replaying into a topic that does not exist would fail record by record (the broker
    does not auto-create topics); say so once, before anything is published."""
    watch = AuthenticationWatch()
    admin = AdminClient(_kafka_config(connection, {"error_cb": watch}))
    existing_topic(
        admin,
        connection,
        watch,
        timeout,
        topic,
        missing=f"the topic {topic} does not exist; nothing was replayed",
    )


if __name__ == "__main__":
    sys.exit(main())

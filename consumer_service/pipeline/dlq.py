"""The dead-letter topic: where poison records go, with headers saying why.

A dead letter keeps the original key, value and headers, within a budget (below), so it
can be inspected or replayed as it was, and gains:

    dlq.error             the human-readable reason (at most 1,000 bytes)
    dlq.error.type        too_large | not_json | invalid_schema | unknown_event_type |
                          processing_error | undecryptable (pipeline.shredding)
    dlq.source.topic      where it came from
    dlq.source.partition
    dlq.source.offset
    dlq.consumer.group    which group gave up on it (at most 255 bytes)

The budget. The broker accepted the original, but its dead letter is bigger (the dlq.*
headers are added) and the DLQ producer may send less than the broker takes (librdkafka's
`message.max.bytes`, 1,000,000 by default, against the broker's 1,048,588). So of the
producer's limit, `FACTS_MAX_BYTES` is reserved for the dlq.* headers and framing, and of
the rest (the budget) the key may take a quarter, the original headers a quarter (a prefix
of them, in order, each whole), and the value what the two left. A part that does not fit
is cut: left out whole, and described instead:

    dlq.cut                   what was cut, of key, value, headers: e.g. `headers`
    dlq.cut.key.bytes         the key's size, and its SHA-256 (hex)
    dlq.cut.key.sha256
    dlq.cut.value.bytes       the same for the value
    dlq.cut.value.sha256
    dlq.cut.headers.count     how many headers were cut (the last ones), their names'
    dlq.cut.headers.bytes     and values' bytes, and the SHA-256 of each cut header's
    dlq.cut.headers.sha256    name and value, each preceded by its length (4 bytes, BE)

A dead letter the DLQ topic still refuses as too large (its `max.message.bytes` is below
the producer's) is sent again as a dead letter of its own facts: no key, no value, no
original header, every part cut as above, and `dlq.facts.only` saying why. At most
`FACTS_MAX_BYTES` bytes: a DLQ topic that refuses that much refuses everything, which
stops the worker as any refusal for good does (`DeadLetterRejected`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from shared.config import CommonSettings
from shared.errors import PipelineError, Unavailable
from shared.kafka import client_config

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]
OriginalHeaders = tuple[tuple[str, bytes], ...]
# What confluent-kafka's Message.headers() returns.
RawHeaders = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]]


# Broker verdicts on one record that no retry can change: the record (or the DLQ topic's
# configuration, or our permissions) must change first.
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_EXCEPTION,
    }
)
# The broker's "too large" verdicts: the letter's facts alone still fit.
SIZE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})

HEADER_ERROR_MAX_BYTES = 1000
GROUP_MAX_BYTES = 255
FACTS_WHY_MAX_BYTES = 200

# librdkafka's default `message.max.bytes`: the most the DLQ producer sends in one record
# unless its config says otherwise.
PRODUCER_MAX_MESSAGE_BYTES = 1_000_000
# An upper bound of Kafka's framing of one key, value or header (two varint lengths) and
# of one record in a batch, the batch's own header included.
FIELD_OVERHEAD = 10
RECORD_OVERHEAD = 128
# The most a dead letter's dlq.* headers take, with the record's framing; and so the most
# a facts-only dead letter takes (a unit test holds it to that for extreme inputs).
FACTS_MAX_BYTES = 4096

PARTS = ("key", "value", "headers")


class DeadLetterRejected(PipelineError):
    """The DLQ topic refused a record for good (not authorised, a policy, or too small to
    take even a dead letter's facts). Not retried: the worker stops with a clear error."""


@dataclass(frozen=True)
class DeadLetter:
    """One poison record to dead-letter: the original bytes plus why."""

    key: bytes | None
    value: bytes | None
    headers: OriginalHeaders
    reason: str
    message: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class LetterRecord:
    """What is produced to the DLQ for one DeadLetter; `cut` names the parts left out."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    cut: tuple[str, ...] = ()

    @property
    def wire_bytes(self) -> int:
        """An upper bound of the record's size on the wire, alone in its batch."""
        return (
            RECORD_OVERHEAD
            + _field(self.key)
            + _field(self.value)
            + sum(_header_bytes(k, v) for k, v in self.headers)
        )


def normalise_headers(raw: RawHeaders | None) -> OriginalHeaders:
    """A consumed record's headers as `DeadLetter.headers` holds them: `(name, bytes)`
    pairs in their order, whether confluent-kafka gave a list or a dict; a str value is
    UTF-8 encoded, a missing value (None) becomes empty bytes, no headers an empty tuple."""
    items = raw.items() if isinstance(raw, Mapping) else (raw or ())
    return tuple((k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in items)


def dlq_headers(letter: DeadLetter, group: str) -> Headers:
    """The original headers followed by the dlq.* ones: the headers of a dead letter
    that nothing was cut from."""
    return [*letter.headers, *_facts(letter, group)]


def bounded(letter: DeadLetter, group: str, limit: int) -> LetterRecord:
    """The dead letter of `letter` for a producer that sends records of up to `limit`
    bytes: the original key, value and headers within the budget of the module's
    docstring, the cut parts described, then the dlq.* headers. Its `wire_bytes` is at
    most `max(limit, FACTS_MAX_BYTES)`. Pure."""
    budget = max(0, limit - FACTS_MAX_BYTES)
    share = budget // 4
    key = letter.key if _field(letter.key) <= share else None
    kept = headers_bytes = 0
    for name, data in letter.headers:
        size = _header_bytes(name, data)
        if headers_bytes + size > share:
            break
        headers_bytes += size
        kept += 1
    value = letter.value if _field(letter.value) <= budget - _field(key) - headers_bytes else None
    cut = tuple(
        part
        for part, whole in (
            ("key", key is not None or letter.key is None),
            ("value", value is not None or letter.value is None),
            ("headers", kept == len(letter.headers)),
        )
        if not whole
    )
    return LetterRecord(
        key,
        value,
        [*letter.headers[:kept], *_cut_headers(letter, cut, kept), *_facts(letter, group)],
        cut,
    )


def facts_only(letter: DeadLetter, group: str, why: str) -> LetterRecord:
    """The dead letter of `letter` that holds only its facts: where it came from, why it
    was dead-lettered, and the size and digest of each part it had; `why` says why the
    whole one could not be sent. At most FACTS_MAX_BYTES on the wire, whatever the
    inputs. Pure."""
    cut = tuple(
        part
        for part, present in zip(
            PARTS,
            (letter.key is not None, letter.value is not None, bool(letter.headers)),
            strict=True,
        )
        if present
    )
    return LetterRecord(
        None,
        None,
        [
            *_cut_headers(letter, cut, 0),
            ("dlq.facts.only", _bounded_utf8(why, FACTS_WHY_MAX_BYTES)),
            *_facts(letter, group),
        ],
        cut,
    )


def headers_digest(headers: Sequence[tuple[str, bytes]]) -> str:
    """SHA-256 (hex) of headers, each name and value preceded by its length (4 bytes,
    big-endian), so that no two lists of headers share an input."""
    digest = hashlib.sha256()
    for name, value in headers:
        for part in (_name_bytes(name), value):
            digest.update(len(part).to_bytes(4, "big"))
            digest.update(part)
    return digest.hexdigest()


def _facts(letter: DeadLetter, group: str) -> Headers:
    return [
        ("dlq.error", _bounded_utf8(letter.message, HEADER_ERROR_MAX_BYTES)),
        ("dlq.error.type", _bounded_utf8(letter.reason, 40)),
        # Kafka's own limit on a topic name is 249 characters.
        ("dlq.source.topic", _bounded_utf8(letter.topic, 249)),
        ("dlq.source.partition", str(letter.partition).encode()),
        ("dlq.source.offset", str(letter.offset).encode()),
        ("dlq.consumer.group", _bounded_utf8(group, GROUP_MAX_BYTES)),
    ]


def _cut_headers(letter: DeadLetter, cut: Sequence[str], kept: int) -> Headers:
    """The dlq.cut* headers describing the parts in `cut` (of the headers, those after
    the first `kept`)."""
    if not cut:
        return []
    out: Headers = [("dlq.cut", ",".join(cut).encode())]
    for part, data in (("key", letter.key), ("value", letter.value)):
        if part in cut and data is not None:
            out.append((f"dlq.cut.{part}.bytes", str(len(data)).encode()))
            out.append((f"dlq.cut.{part}.sha256", hashlib.sha256(data).hexdigest().encode()))
    if "headers" in cut:
        rest = letter.headers[kept:]
        size = sum(len(_name_bytes(k)) + len(v) for k, v in rest)
        out.append(("dlq.cut.headers.count", str(len(rest)).encode()))
        out.append(("dlq.cut.headers.bytes", str(size).encode()))
        out.append(("dlq.cut.headers.sha256", headers_digest(rest).encode()))
    return out


def _name_bytes(name: str) -> bytes:
    # A name confluent-kafka decoded may hold any code point: count what UTF-8 makes of
    # it, surrogates included, rather than fail.
    return name.encode("utf-8", "surrogatepass")


def _field(data: bytes | None) -> int:
    return FIELD_OVERHEAD + (len(data) if data is not None else 0)


def _header_bytes(name: str, value: str | bytes | None) -> int:
    data = value.encode() if isinstance(value, str) else (value or b"")
    return FIELD_OVERHEAD + len(_name_bytes(name)) + len(data)


def _bounded_utf8(text: str, limit: int) -> bytes:
    # Error messages can quote the record: unpaired surrogates become backslash escapes
    # (they cannot be UTF-8), and the length is bounded so a header never dwarfs the
    # record, cut on a character boundary.
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


class DeadLetterQueue(Protocol):
    """Sends poison records to the dead-letter topic."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Produce every letter and block until the broker acknowledged all of them.
        Raises `Unavailable` when any was not acknowledged in time; the caller retries
        the whole list (so the DLQ is at-least-once). Raises `DeadLetterRejected` when
        the broker refused one for good; the caller must not retry."""
        ...

    def close(self) -> None: ...


class KafkaDeadLetterQueue:
    """DeadLetterQueue on a confluent-kafka Producer, created on first use.

    `connection` is the Kafka settings (a bare bootstrap address means PLAINTEXT);
    `config` adds or overrides producer properties other than the connection's."""

    def __init__(
        self,
        connection: CommonSettings | str,
        topic: str,
        group: str,
        flush_timeout: float,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._connection = connection
        self._topic = topic
        self._group = group
        self._flush_timeout = flush_timeout
        self._config = dict(config or {})
        self._limit = int(self._config.get("message.max.bytes", PRODUCER_MAX_MESSAGE_BYTES))
        self._producer: Producer | None = None

    def _get(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                client_config(
                    self._connection,
                    {
                        "acks": "all",
                        "enable.idempotence": True,
                        "linger.ms": 5,
                        # Leave the delivery verdict to our flush timeout and retry.
                        "message.timeout.ms": int(self._flush_timeout * 1000),
                        **self._config,
                    },
                )
            )
        return self._producer

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        producer = self._get()
        deadline = time.monotonic() + self._flush_timeout
        reports = _Deliveries()
        for letter in letters:
            self._send(
                producer, letter, bounded(letter, self._group, self._limit), reports, deadline
            )
        remaining = producer.flush(max(0.0, deadline - time.monotonic()))
        # The DLQ topic takes less than the producer sends: each letter it refused as too
        # large goes again as its facts alone, each flushed alone, so that no batch of
        # them is too large either.
        while reports.too_large:
            letter, why = reports.too_large.pop(0)
            facts = facts_only(letter, self._group, f"the DLQ topic refused it: {why}")
            self._send(producer, letter, facts, reports, deadline, facts=True)
            remaining = producer.flush(max(0.0, deadline - time.monotonic()))
        if reports.refused:
            # Retrying would fail the same way forever while the partition stands still
            # and nothing says why; skipping the record would lose it (the DLQ is its last
            # home). So stop loudly: the operator fixes the DLQ topic (ACLs, a size limit
            # below FACTS_MAX_BYTES) and the restarted worker dead-letters the batch again.
            raise DeadLetterRejected(
                f"the DLQ topic {self._topic} refused {len(reports.refused)} record(s) for "
                f"good: {reports.refused[:3]}"
            )
        if remaining or reports.failures:
            raise Unavailable(
                f"DLQ did not acknowledge {remaining + len(reports.failures)} record(s): "
                f"{reports.failures[:3]}"
            )

    def _send(
        self,
        producer: Producer,
        letter: DeadLetter,
        record: LetterRecord,
        reports: _Deliveries,
        deadline: float,
        facts: bool = False,
    ) -> None:
        """Queue `record`, the dead letter of `letter`; one the producer finds too large
        goes as the letter's facts alone instead, at once."""
        if record.cut:
            log.warning(
                "dead letter sent as its facts only" if facts else "dead letter cut to fit",
                extra={
                    "topic": letter.topic,
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "cut": ",".join(record.cut),
                },
            )
        try:
            self._produce(producer, record, reports.on_delivery(letter, facts), deadline)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.MSG_SIZE_TOO_LARGE:
                raise Unavailable(f"DLQ produce failed: {exc}") from exc
            if facts:
                # Only a producer configured below FACTS_MAX_BYTES gets here.
                reports.refused.append(f"{error} (source offset {letter.offset})")
                return
            why = f"the DLQ producer refused it: {error}"
            self._send(
                producer, letter, facts_only(letter, self._group, why), reports, deadline, True
            )

    def _produce(
        self,
        producer: Producer,
        record: LetterRecord,
        on_delivery: Callable[[KafkaError | None, Any], None],
        deadline: float,
    ) -> None:
        """produce(), waiting (while serving delivery reports) for room in the local queue
        until `deadline`; raises Unavailable when the queue stays full that long, e.g.
        because the broker does not take what is queued."""
        while True:
            try:
                producer.produce(
                    self._topic,
                    key=record.key,
                    value=record.value,
                    headers=record.headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(
                        "the DLQ producer's queue stayed full for the flush timeout"
                    ) from None
                producer.poll(min(remaining, 0.1))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._flush_timeout)
            self._producer = None


class _Deliveries:
    """The delivery reports of one `send`, sorted by what they call for."""

    def __init__(self) -> None:
        self.failures: list[str] = []  # transient: the whole send is retried
        self.refused: list[str] = []  # for good: the worker stops
        self.too_large: list[tuple[DeadLetter, str]] = []  # sent again as facts only

    def on_delivery(
        self, letter: DeadLetter, facts: bool
    ) -> Callable[[KafkaError | None, Any], None]:
        def report(err: KafkaError | None, _msg: Any) -> None:
            if err is None:
                return
            if err.code() in SIZE_ERRORS and not facts and not err.fatal():
                self.too_large.append((letter, str(err)))
            elif err.fatal() or err.code() in PERMANENT_ERRORS:
                self.refused.append(f"{err} (source offset {letter.offset})")
            else:
                self.failures.append(str(err))

        return report

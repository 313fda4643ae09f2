"""One record of the dead-letter topic as pipeline-admin sees it: the consumer's dlq.*
headers read out, the original headers kept apart."""

from __future__ import annotations

from dataclasses import dataclass

DLQ_PREFIX = "dlq."
REPLAY_ATTEMPT = "replay.attempt"
UNKNOWN_REASON = "unknown"

Headers = tuple[tuple[str, bytes], ...]


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
    def cut(self) -> tuple[str, ...]:
        """The parts of the original (key, value, headers) the consumer left out of this
        dead letter to make it fit (`dlq.cut`); empty when it holds the whole record. A
        letter with a part cut is not the original and must never be replayed as it."""
        text = self._text("dlq.cut")
        return tuple(part for part in text.split(",") if part) if text else ()

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

"""Logging set-up: one JSON object per line on stderr, configured once per process.

Call sites pass facts as `extra={"event_id": ..., "partition": ...}`; they become fields of
the line. Payloads are never logged.

A line is `{"time", "level", "logger", "message", "service", <extra fields>...}` plus
`exc_info` / `stack_info` (the formatted traceback) when there is one. The formatter is
our own, on orjson: the consumer may log a line per event, and python-json-logger spent
7-17 µs on each (see docs/performance.md).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import orjson

# Attributes every LogRecord has: anything else on a record came from `extra`.
_STANDARD_ATTRIBUTES = frozenset(
    (*vars(logging.LogRecord("", 0, "", 0, "", (), None)), "message", "asctime", "taskName")
)
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def _as_text(value: Any) -> str:
    # What JSON cannot hold as is (an exception, a Path, bytes) is logged as its str().
    return str(value)


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one compact JSON object (no newline), the fields in the order
    above. Never raises for an odd field value: what orjson refuses (an integer beyond 64
    bits, a lone surrogate) goes through the stdlib encoder, which writes escapes."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # `2026-11-24 04:29:53,123` in local time, as logging's default. The part up to
        # the second is kept between lines: strftime is most of the cost of a timestamp.
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line, default=_as_text, option=_ORJSON_OPTIONS).decode()
        except TypeError:  # orjson.JSONEncodeError
            return json.dumps(line, default=_as_text, skipkeys=True)


def configure_logging(level: str = "INFO", *, service: str) -> None:
    """Route every logger through one JSON handler on stderr. Safe to call twice."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # gunicorn's own loggers keep their handlers unless told to propagate to ours.
    for name in ("gunicorn.error", "gunicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


def gunicorn_logger_class(level: str, *, service: str) -> type:
    """A gunicorn `logger_class` that logs through `configure_logging` from its first line.

    gunicorn sets up its own plain-text handlers before any server hook runs; this class
    replaces them as soon as they exist. Imported lazily: only the servers need gunicorn.
    """
    from gunicorn.glogging import Logger

    class JsonLogger(Logger):  # type: ignore[misc]
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            configure_logging(level, service=service)

    return JsonLogger

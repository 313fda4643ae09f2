"""Logging set-up: one JSON object per line on stderr, configured once per process.

Call sites pass facts as `extra={"event_id": ..., "partition": ...}`; they become fields of
the line. Payloads are never logged.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO", *, service: str) -> None:
    """Route every logger through one JSON handler on stderr. Safe to call twice."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
            timestamp=False,
        )
    )
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

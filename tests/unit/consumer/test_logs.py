"""The JSON log line (shared/logs.py), as the consumer writes one per event on request:
the same fields as before the lean formatter, and never an exception for odd values."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from shared.logs import JsonLineFormatter


def record(msg: str = "event processed", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "consumer_service.pipeline.worker", logging.INFO, __file__, 1, msg, (), None
    )
    rec.__dict__.update(extra)
    return rec


def test_a_line_has_the_fixed_fields_then_the_extra_ones() -> None:
    line = JsonLineFormatter("consumer").format(
        record(event_id="e-1", user_id="ü", event_type="LOGIN", partition=2, offset=7)
    )
    parsed = json.loads(line)
    assert list(parsed) == [
        "time",
        "level",
        "logger",
        "message",
        "service",
        "event_id",
        "user_id",
        "event_type",
        "partition",
        "offset",
    ]
    assert parsed["level"] == "INFO" and parsed["logger"] == "consumer_service.pipeline.worker"
    assert parsed["service"] == "consumer" and parsed["user_id"] == "ü"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", parsed["time"])
    assert "\n" not in line


def test_odd_values_are_written_not_raised() -> None:
    formatter = JsonLineFormatter("consumer")
    parsed = json.loads(
        formatter.format(
            record(big=2**70, lone="\ud800", path=Path("/x"), keys={1: "a"}, items=(1, 2))
        )
    )
    assert parsed["big"] == 2**70
    assert parsed["lone"] == "\ud800"
    assert parsed["path"] == "/x"
    assert parsed["keys"] == {"1": "a"}
    assert parsed["items"] == [1, 2]


def test_a_traceback_is_one_field() -> None:
    try:
        raise KeyError("boom")
    except KeyError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        rec.exc_info = sys.exc_info()
    parsed = json.loads(JsonLineFormatter("consumer").format(rec))
    assert "KeyError: 'boom'" in parsed["exc_info"]
    assert parsed["message"] == "failed"

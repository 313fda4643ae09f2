"""The read API's query rules and the worker heartbeat verdicts, without Redis or Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from consumer_service.schemas import ProcessedQuerySchema
from consumer_service.status import StatusFile, WorkerStatus
from consumer_service.store import PageQuery, _matches


def load(**args: str) -> dict[str, Any]:
    result: dict[str, Any] = ProcessedQuerySchema().load(args)
    return result


def test_query_defaults_and_normalised_timestamps() -> None:
    assert load() == {"limit": 100}
    q = load(since="2026-11-24T06:00:00+02:00", until="2026-11-24T04:00:00.5Z")
    assert q["since"] == "2026-11-24T04:00:00.000Z"
    assert q["until"] == "2026-11-24T04:00:00.500Z"


@pytest.mark.parametrize(
    "args",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "1.5"},
        {"cursor": "x"},
        {"cursor": "-3"},
        {"since": "2026-11-24"},
        {"until": "soon"},
        {"eventType": "x" * 65},
        {"page": "2"},
        {"since": "2026-11-24T05:00:00Z", "until": "2026-11-24T04:00:00Z"},
        # Valid ISO-8601, but outside datetime's range once converted to UTC.
        {"since": "0001-01-01T00:00:00+01:00"},
        {"until": "9999-12-31T23:59:59-01:00"},
    ],
)
def test_invalid_queries(args: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ProcessedQuerySchema().load(args)


def test_filters_match_on_user_type_and_half_open_time_window() -> None:
    event = {"userId": "u", "eventType": "LOGIN", "timestamp": "2026-11-24T04:00:00.000Z"}
    assert _matches(event, PageQuery(user_id="u", event_type="LOGIN"))
    assert not _matches(event, PageQuery(user_id="v"))
    assert not _matches(event, PageQuery(event_type="LOGOUT"))
    assert _matches(event, PageQuery(since="2026-11-24T04:00:00.000Z"))
    assert not _matches(event, PageQuery(until="2026-11-24T04:00:00.000Z"))


def test_worker_status_verdicts(tmp_path: Path) -> None:
    now = 1000.0
    assert WorkerStatus("running", now - 5).problem(30, now) is None
    assert "heartbeat" in str(WorkerStatus("running", now - 60).problem(30, now))
    assert "backing_off" in str(WorkerStatus("backing_off", now, 0, "Redis down").problem(30, now))
    # Not ready until the group has given this member its first (possibly empty) assignment.
    assert "not joined" in str(WorkerStatus("joining", now).problem(30, now))
    assert WorkerStatus("running", now, 0).problem(30, now) is None
    file = StatusFile(tmp_path / "s.json")
    assert file.read() is None
    file.write(WorkerStatus("running", now, 6))
    assert file.read() == WorkerStatus("running", now, 6)

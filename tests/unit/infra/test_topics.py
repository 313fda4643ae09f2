"""infra/topics.py reads KAFKA_TOPIC_PARTITIONS like the services do: a bad value ends in
exit status 2 and one line naming the variable, before any broker is asked."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from infra import topics


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], int]]:
    """Stands in for the broker: `ensure` records the topics and partitions it would create."""
    calls: list[tuple[list[str], int]] = []

    def ensure(_connection: object, names: Sequence[str], partitions: int) -> list[str]:
        calls.append((list(names), partitions))
        return []

    monkeypatch.setattr(topics, "wait_for_broker", lambda *_args: True)
    monkeypatch.setattr(topics, "ensure_topics", ensure)
    return calls


@pytest.mark.parametrize("value", ["six", "2.5", "0", "-3", "10001", "9" * 30])
def test_a_bad_partition_count_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_broker: list[tuple[list[str], int]],
    value: str,
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", value)
    assert topics.main(["ensure"]) == 2
    err = capsys.readouterr().err
    assert "KAFKA_TOPIC_PARTITIONS" in err
    assert "Traceback" not in err
    assert no_broker == []


@pytest.mark.parametrize("value", ["x", "0", "-1", "10001"])
def test_a_bad_partitions_argument_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], no_broker: list[tuple[list[str], int]], value: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        topics.main(["ensure", "--partitions", value])
    assert exit_info.value.code == 2
    assert "--partitions" in capsys.readouterr().err
    assert no_broker == []


def test_the_partition_count_comes_from_the_variable_unless_given(
    monkeypatch: pytest.MonkeyPatch, no_broker: list[tuple[list[str], int]]
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC", "events")
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", " 3 ")
    assert topics.main(["ensure"]) == 0
    assert topics.main(["ensure", "--partitions", "4", "--topic", "other"]) == 0
    assert no_broker == [(["events", "events.dlq"], 3), (["other", "other.dlq"], 4)]


def test_the_default_is_six_partitions(
    monkeypatch: pytest.MonkeyPatch, no_broker: list[tuple[list[str], int]]
) -> None:
    monkeypatch.delenv("KAFKA_TOPIC_PARTITIONS", raising=False)
    monkeypatch.delenv("KAFKA_TOPIC", raising=False)
    assert topics.main(["ensure"]) == 0
    assert no_broker == [(["user-activity-events", "user-activity-events.dlq"], 6)]

"""`topic_metadata`: the broker's answer for one topic, or TopicMissing naming it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from consumer_service.topics import TopicMissing, topic_metadata
from shared.kafka import AuthenticationWatch


class AnsweringClient:
    """A client whose metadata request answers at once with `topics`."""

    def __init__(self, topics: dict[str, Any]) -> None:
        self.topics = topics

    def list_topics(self, topic: str | None, timeout: float) -> Any:
        return SimpleNamespace(topics=self.topics)

    def poll(self, timeout: float) -> int:
        return 0


def ask(topics: dict[str, Any], *, need_partitions: bool = False) -> Any:
    client = AnsweringClient(topics)
    return topic_metadata(
        client, "127.0.0.1:1", AuthenticationWatch(), 1.0, "t", need_partitions=need_partitions
    )


def test_a_usable_topic_is_returned() -> None:
    found = SimpleNamespace(error=None, partitions={0: object(), 1: object()})
    assert ask({"t": found}) is found


@pytest.mark.parametrize(
    "topics",
    [
        {},
        {"t": SimpleNamespace(error="UNKNOWN_TOPIC_OR_PART", partitions={})},
    ],
    ids=["absent", "reported-with-an-error"],
)
def test_a_topic_that_is_not_there_is_missing(topics: dict[str, Any]) -> None:
    with pytest.raises(TopicMissing, match=r"^topic t is not available$") as caught:
        ask(topics)
    assert caught.value.topic == "t"


def test_a_topic_without_partitions_yet_is_missing_only_to_who_needs_them() -> None:
    creating = SimpleNamespace(error=None, partitions={})
    # Readiness and the dashboard see the topic (and no partitions) while it is created.
    assert ask({"t": creating}) is creating
    with pytest.raises(TopicMissing):
        ask({"t": creating}, need_partitions=True)

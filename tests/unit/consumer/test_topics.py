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


def ask(topics: dict[str, Any]) -> Any:
    return topic_metadata(AnsweringClient(topics), "127.0.0.1:1", AuthenticationWatch(), 1.0, "t")


def test_a_usable_topic_is_returned() -> None:
    found = SimpleNamespace(error=None, partitions={0: object(), 1: object()})
    assert ask({"t": found}) is found


@pytest.mark.parametrize(
    "topics",
    [
        {},
        {"t": SimpleNamespace(error="UNKNOWN_TOPIC_OR_PART", partitions={})},
        {"t": SimpleNamespace(error=None, partitions={})},
    ],
    ids=["absent", "reported-with-an-error", "without-partitions"],
)
def test_a_topic_that_is_not_usable_is_missing(topics: dict[str, Any]) -> None:
    with pytest.raises(TopicMissing, match=r"^topic t is not available$") as caught:
        ask(topics)
    assert caught.value.topic == "t"

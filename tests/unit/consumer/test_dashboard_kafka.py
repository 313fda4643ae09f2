"""The dashboard's Kafka view never destroys its AdminClient while a request is in flight:
librdkafka would answer it into freed memory and the process would die."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from consumer_service.api.dashboard import kafka as view_module
from consumer_service.api.dashboard.kafka import KafkaGroupView
from consumer_service.config import ConsumerSettings


class FakeAdmin:
    """Hands out futures the test answers, or leaves in flight."""

    def __init__(self, _config: Any) -> None:
        self.futures: list[Future[Any]] = []

    def _future(self) -> Future[Any]:
        future: Future[Any] = Future()
        self.futures.append(future)
        return future

    def list_offsets(self, request: dict[Any, Any], **_: Any) -> dict[Any, Future[Any]]:
        return {tp: self._future() for tp in request}

    def list_consumer_group_offsets(self, request: list[Any], **_: Any) -> dict[str, Any]:
        return {request[0].group_id: self._future()}

    def describe_consumer_groups(self, groups: list[str], **_: Any) -> dict[str, Any]:
        return {groups[0]: self._future()}


@pytest.fixture
def view(monkeypatch: pytest.MonkeyPatch) -> KafkaGroupView:
    monkeypatch.setattr(view_module, "AdminClient", FakeAdmin)
    found = SimpleNamespace(partitions={0: None, 1: None})
    monkeypatch.setattr(view_module, "topic_metadata", lambda *_a, **_k: found)
    monkeypatch.setattr(view_module, "_OUTLIVED", [])
    return KafkaGroupView(ConsumerSettings(), timeout_seconds=0.05)


def test_a_client_with_a_request_in_flight_is_kept_not_destroyed(view: KafkaGroupView) -> None:
    snapshot = view.snapshot()  # nothing answers: the snapshot times out
    assert snapshot.error is not None
    admin = view._client()
    assert any(not f.done() for f in admin.futures)

    view.close()

    assert [admin] == view_module._OUTLIVED


def test_a_client_whose_requests_answered_is_let_go(view: KafkaGroupView) -> None:
    view.snapshot()
    admin = view._client()
    for future in admin.futures:
        future.set_exception(RuntimeError("answered"))

    view.close()

    assert view_module._OUTLIVED == []
    assert view._client() is not admin  # closed: a later use makes a new one

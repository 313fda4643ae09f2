"""What the per-request path relies on, below the HTTP layer: the one-shot latch a request
thread waits on for its deliveries, and a worker's start leaving the collector only the
objects that requests allocate."""

from __future__ import annotations

import gc
import runpy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from producer_service.app import create_app
from producer_service.config import ProducerSettings
from producer_service.delivery import Latch, Requests
from tests.unit.producer.fakes import InMemoryEventPublisher

GUNICORN_CONF = Path(__file__).parents[3] / "producer_service" / "gunicorn.conf.py"


def test_latch_wait_times_out_until_set() -> None:
    latch = Latch()
    started = time.monotonic()
    assert latch.wait(0.05) is False
    assert time.monotonic() - started >= 0.04


def test_latch_set_before_wait_returns_at_once() -> None:
    latch = Latch()
    latch.set()
    assert latch.wait(5) is True


def test_latch_set_by_another_thread_wakes_the_waiter() -> None:
    latch = Latch()
    timer = threading.Timer(0.05, latch.set)
    timer.start()
    started = time.monotonic()
    assert latch.wait(5) is True
    assert time.monotonic() - started < 2
    timer.join()


def test_thread_requests_wait_on_a_latch() -> None:
    # A threading.Event costs a Condition round trip per request (see Latch).
    assert isinstance(Requests().new_event(), Latch)


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_worker_start_freezes_what_is_allocated_so_far(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A metrics directory is given, so loading the config makes none of its own.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf = runpy.run_path(str(GUNICORN_CONF))
    app = create_app(ProducerSettings(), publisher=InMemoryEventPublisher())
    assert gc.get_freeze_count() == 0

    conf["post_worker_init"](SimpleNamespace(wsgi=app))

    assert gc.get_freeze_count() > 0

"""The start-up check of Redis durability: the worker commits offsets as soon as Redis
answers, which is only "on disk" with appendonly yes + appendfsync always, and stays
there only if Redis never evicts keys (maxmemory-policy noeviction)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from consumer_service.config import ConsumerSettings
from consumer_service.storage import Durability, RedisEventStore, check_durability

from .test_redis_outage import PrivateRedis
from .test_service import ROOT, free_port, service_env

NO_AOF = ("--appendonly", "no")
NO_CONFIG = (*PrivateRedis.PRODUCTION, "--rename-command", "CONFIG", "")
EVICTING = (*PrivateRedis.PRODUCTION, "--maxmemory-policy", "allkeys-lru")


@pytest.fixture
def redis_with(tmp_path: Path) -> Iterator[Callable[[Sequence[str]], PrivateRedis]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    servers: list[PrivateRedis] = []

    def start(options: Sequence[str]) -> PrivateRedis:
        server = PrivateRedis(tmp_path / str(len(servers)), options)
        server.dir.mkdir()
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc is not None:
            server.kill()


def store_at(url: str) -> RedisEventStore:
    return RedisEventStore.from_url(url, "durability", 60, timeout_seconds=1.0)


@pytest.mark.parametrize("require", [False, True])
def test_redis_without_fsync_always_is_an_error_and_refused_when_required(
    redis_with: Callable[[Sequence[str]], PrivateRedis],
    caplog: pytest.LogCaptureFixture,
    require: bool,
) -> None:
    store = store_at(redis_with(NO_AOF).url)
    try:
        assert store.durability() == Durability("no", "everysec", "noeviction")
        assert check_durability(store, require) is not require
    finally:
        store.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "acknowledged events can be lost on a Redis crash" in errors[0].getMessage()
    assert "appendfsync always" in errors[0].getMessage()
    assert (len(errors) == 2) is require  # the refusal says so too


def test_redis_with_fsync_always_passes_quietly(
    redis_with: Callable[[Sequence[str]], PrivateRedis], caplog: pytest.LogCaptureFixture
) -> None:
    store = store_at(redis_with(PrivateRedis.PRODUCTION).url)
    try:
        assert store.durability().fsync_always
        assert store.durability().never_evicts
        assert check_durability(store, require=True)
    finally:
        store.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("require", [False, True])
def test_a_redis_that_forbids_config_is_tolerated_unless_fsync_is_required(
    redis_with: Callable[[Sequence[str]], PrivateRedis],
    caplog: pytest.LogCaptureFixture,
    require: bool,
) -> None:
    store = store_at(redis_with(NO_CONFIG).url)
    try:
        found = store.durability()
        assert (found.appendonly, found.appendfsync, found.maxmemory_policy) == (None, None, None)
        assert found.problem
        assert check_durability(store, require) is not require
    finally:
        store.close()
    assert any("could not check" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
@pytest.mark.parametrize("require", [False, True])
def test_an_evicting_redis_is_an_error_and_refused_when_required(
    redis_with: Callable[[Sequence[str]], PrivateRedis],
    caplog: pytest.LogCaptureFixture,
    require: bool,
    policy: str,
) -> None:
    # Evicted seen marks mean duplicates after a replay; an evicted seq restarts cursors.
    server = redis_with((*PrivateRedis.PRODUCTION, "--maxmemory-policy", policy))
    store = store_at(server.url)
    try:
        found = store.durability()
        assert found.fsync_always
        assert found.maxmemory_policy == policy
        assert not found.never_evicts
        assert check_durability(store, require) is not require
    finally:
        store.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "maxmemory-policy noeviction" in errors[0].getMessage()
    assert getattr(errors[0], "maxmemory_policy", None) == policy
    assert (len(errors) == 2) is require


@pytest.mark.parametrize(
    ("switch", "server_options"),
    [
        ("CONSUMER_REQUIRE_DURABLE_REDIS", NO_AOF),
        ("CONSUMER_REQUIRE_DURABLE_REDIS", EVICTING),
        ("CONSUMER_REQUIRE_REDIS_FSYNC", EVICTING),  # the old name still works
    ],
)
def test_the_service_refuses_an_unsafe_redis_with_exit_2_when_required(
    settings: ConsumerSettings,
    redis_with: Callable[[Sequence[str]], PrivateRedis],
    switch: str,
    server_options: Sequence[str],
) -> None:
    env = service_env(settings, free_port(), REDIS_URL=redis_with(server_options).url)
    env[switch] = "true"
    done = subprocess.run(
        [sys.executable, "-m", "consumer_service"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert b"CONSUMER_REQUIRE_DURABLE_REDIS" in done.stderr


def test_the_service_refuses_to_start_with_exit_2_when_fsync_is_required(
    settings: ConsumerSettings,
    redis_with: Callable[[Sequence[str]], PrivateRedis],
    tmp_path: Path,
) -> None:
    env = service_env(
        settings,
        free_port(),
        REDIS_URL=redis_with(NO_AOF).url,
        CONSUMER_REQUIRE_REDIS_FSYNC="true",
    )
    done = subprocess.run(
        [sys.executable, "-m", "consumer_service"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert b"CONSUMER_REQUIRE_REDIS_FSYNC" in done.stderr

"""infra/redis.sh restarts a Redis whose AOF takes a while to load: it waits while the
server answers LOADING, with progress lines, up to LOCAL_REDIS_LOAD_TIMEOUT seconds.

A private redis-server (its own port and state directory) is filled through a few Lua
calls, so the AOF is written in a second or two, once for the module; each test restarts a
copy of it. The shared Redis is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[3]
# About 50 MB of AOF: it loads in about a second here, long enough for the script's pings
# to see LOADING many times over, and quick enough to load three times in one test.
KEYS = 400_000
# In calls of CHUNK keys: one long script would hold Redis past the client's patience.
CHUNK = 20_000
FILL = """
local value = string.rep('x', 100)
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', 'k' .. i, value) end
"""

Script = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def redis_sh_runner(state_dir: Path, port: int) -> Script:
    """infra/redis.sh on a state directory and port of the caller's own."""
    # REDIS_URL would make the script use that Redis instead of starting its own.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(LOCAL_STATE_DIR=str(state_dir), LOCAL_REDIS_PORT=str(port))

    def run(action: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "infra" / "redis.sh"), action],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture(scope="module")
def large_aof(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory whose Redis AOF holds KEYS keys, its server stopped."""
    state_dir = tmp_path_factory.mktemp("large-aof")
    port = free_port()
    redis_sh = redis_sh_runner(state_dir, port)
    try:
        assert redis_sh("start").returncode == 0
        with redis.Redis(port=port) as client:
            for first in range(1, KEYS + 1, CHUNK):
                client.eval(FILL, 0, first, first + CHUNK - 1)
    finally:
        assert redis_sh("stop").returncode == 0
    return state_dir


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def redis_sh(large_aof: Path, tmp_path: Path, port: int) -> Iterator[Script]:
    """infra/redis.sh on a copy of the large AOF, with a port of this test's own."""
    state_dir = tmp_path / "state"
    shutil.copytree(large_aof, state_dir)
    run = redis_sh_runner(state_dir, port)
    try:
        yield run
    finally:
        run("stop")


def test_start_waits_while_a_large_aof_loads(redis_sh: Script, port: int) -> None:
    restarted = redis_sh("start")

    assert restarted.returncode == 0, restarted.stderr
    assert "[redis] loading its data:" in restarted.stderr
    assert "LOCAL_REDIS_LOAD_TIMEOUT=300" in restarted.stderr
    assert "ready on" in restarted.stderr
    with redis.Redis(port=port) as client:
        assert client.dbsize() == KEYS


def test_past_the_load_limit_start_fails_and_a_second_start_waits_on(
    redis_sh: Script, port: int
) -> None:
    impatient = redis_sh("start", LOCAL_REDIS_LOAD_TIMEOUT="0")
    assert impatient.returncode == 1
    assert "still loading after 0 s" in impatient.stderr
    assert "LOCAL_REDIS_LOAD_TIMEOUT" in impatient.stderr

    # The server went on loading; the next start waits for it rather than starting another.
    again = redis_sh("start")
    assert again.returncode == 0, again.stderr
    with redis.Redis(port=port) as client:
        assert client.dbsize() == KEYS


@pytest.mark.parametrize("value", ["soon", "-1", "1.5"])
def test_a_bad_load_limit_is_refused_naming_the_variable(tmp_path: Path, value: str) -> None:
    result = redis_sh_runner(tmp_path, free_port())("start", LOCAL_REDIS_LOAD_TIMEOUT=value)
    assert result.returncode == 2
    assert "LOCAL_REDIS_LOAD_TIMEOUT must be a whole number" in result.stderr
    assert not (tmp_path / "redis").exists()  # nothing was started

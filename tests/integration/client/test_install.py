"""`pip install ./client` works alone: a fresh virtualenv with nothing but the client
imports it without any server dependency and runs its command line."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

from tests.integration.client.conftest import CLIENT_DIR

pytestmark = pytest.mark.integration


def run(*command: str | Path) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_client_installs_alone_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    # What a user types: pip builds the package in isolation (setuptools from the
    # index, as `make venv` needs it too) and installs it with nothing else.
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "-q", CLIENT_DIR)
    installed = run(bin_dir / "python", "-m", "pip", "list", "--format=freeze")
    assert {line.split("==")[0] for line in installed.split()} <= {
        "pip",
        "setuptools",
        "user-activity-client",
    }
    probe = (
        "import sys, activity_client; "
        "c = activity_client.EventClient('http://127.0.0.1:9'); c.close(0); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flask', 'confluent_kafka', 'redis', 'requests', 'gunicorn', 'marshmallow')))"
    )
    assert run(bin_dir / "python", "-c", probe).strip() == "[]"
    assert "FILE.jsonl" in run(bin_dir / "activity-client", "send", "--help")

"""The worker's heartbeat, shared with the read API through a small JSON file.

The worker and the API are different processes; /ready needs to know whether the worker
is making progress without talking to it. The worker rewrites the file at most once a
second (atomically, by rename); the API reads it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

WorkerState = Literal[
    "starting", "joining", "running", "backing_off", "stopping", "stopped", "failed"
]
# What /ready shows of the worker.
WorkerCheck = Literal["ok", "stalled", "joining", "backing_off", "failed", "stopped"]


@dataclass(frozen=True)
class WorkerStatus:
    state: WorkerState
    updated_at: float
    assigned_partitions: int = 0
    detail: str = ""

    def check(self, stall_seconds: float, now: float | None = None) -> WorkerCheck:
        """ "ok" when the worker is fine, else the stable name of why it is not ready:
        what /ready shows (`problem` says the same in words, for the log)."""
        now = time.time() if now is None else now
        if now - self.updated_at > stall_seconds:
            return "stalled"
        if self.state in ("starting", "joining"):
            # Until the group has given this member its (possibly empty) assignment, an
            # event posted now would not be processed promptly.
            return "joining"
        if self.state == "backing_off" or self.state == "failed" or self.state == "stopped":
            return self.state
        return "ok"

    def problem(self, stall_seconds: float, now: float | None = None) -> str | None:
        """Why this status means "not ready", or None when the worker is fine."""
        now = time.time() if now is None else now
        check = self.check(stall_seconds, now)
        if check == "ok":
            return None
        if check == "stalled":
            return f"no heartbeat from the worker for {now - self.updated_at:.0f} s"
        if check == "joining":
            return "the worker has not joined the consumer group yet"
        return f"worker is {self.state}: {self.detail}".rstrip(": ")


class StatusFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._last_write = 0.0
        self._last_state: str | None = None

    def write(self, status: WorkerStatus, *, force: bool = False) -> None:
        """Rewrite the file; skipped when the state is unchanged and the last write is
        under a second old, so the hot loop pays almost nothing."""
        if (
            not force
            and status.state == self._last_state
            and (status.updated_at - self._last_write < 1.0)
        ):
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".status-")
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(status), f)
        os.replace(tmp, self.path)
        self._last_write = status.updated_at
        self._last_state = status.state

    def read(self) -> WorkerStatus | None:
        try:
            data = json.loads(self.path.read_text())
            return WorkerStatus(**data)
        except (OSError, ValueError, TypeError):
            return None

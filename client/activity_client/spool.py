"""The crash-safe spool: every accepted event in SQLite (WAL mode) until it is
acknowledged, with the idempotency key it is sent under.

Layout: one table, `events(row INTEGER PRIMARY KEY, key TEXT, body BLOB)`; `row` is the
order events were tracked in, `body` the request item (`batching.encode_event`), `key`
its `Idempotency-Key`. A row is deleted only when the server acknowledged the event
(201) or refused it for good (an invalid item), so a process that starts on the file
resends every other row under its stored key: the server gives it the same `eventId`
and the consumer stores it once.

One process owns a spool at a time (an exclusive `flock` on `<path>.lock`). A child
forked from the owner spools to `<path>.fork-<pid>`; whoever next opens `<path>` adopts
the rows of such files whose process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

from activity_client.errors import SpoolError

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events "
    "(row INTEGER PRIMARY KEY, key TEXT NOT NULL, body BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
)
FORK_INFIX = ".fork-"
# Row numbers bound into one DELETE/UPDATE: far under SQLite's limit on parameters
# (32,766 since 3.32, 999 before), and a batch of the client's default size in one.
ROWS_PER_STATEMENT = 500
# WAL pages (4 KiB) after which a commit copies the WAL back into the database: the
# remover's at SQLite's default, the writer's only as a bound on the WAL's size.
REMOVER_CHECKPOINT_PAGES = 1000
WRITER_CHECKPOINT_PAGES = 16_000
SYNC_MODES = ("full", "normal")


class Spool:
    """The spool file at `path`, owned by this process until `close()`.

    `sync="full"` makes every commit an fsync (an accepted event survives a power loss);
    `"normal"` commits to the OS only (it survives a crash of this process, not of the
    machine) and is several times cheaper. Each method commits one transaction; callers
    serialise `append` (one writer at a time); `delete`/`rekey` may run beside it, from
    any number of threads: they wait for it on a lock of this process, never in SQLite's
    busy handler. Every SQLite failure is raised as `SpoolError` naming the file."""

    def __init__(self, path: str, sync: str = "full") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"spool sync must be one of {SYNC_MODES}, not {sync!r}")
        self.path = os.path.abspath(path)
        self._lock_file = _take_lock(self.path)
        try:
            # Checkpoints (copying the WAL into the database, two more fsyncs) are left to
            # the remover, off the path of track(); the writer takes one only if the WAL
            # grew that far without removals (the server unreachable for a long time).
            self._writer = self._connect(sync, WRITER_CHECKPOINT_PAGES)
            # A removal lost in a machine crash only makes the next process resend an
            # acknowledged event, which the server's ids make harmless: no fsync for it.
            self._remover = self._connect("normal", REMOVER_CHECKPOINT_PAGES)
            # One transaction at a time on the file, whichever connection runs it: SQLite's
            # own wait for a busy database sleeps in steps of a millisecond and more, and
            # each such sleep would hold up every thread waiting on a group commit.
            self._write_lock = threading.Lock()
            with self._guard("create the table"):
                self._writer.executescript(SCHEMA)
            self._adopt_orphans()
            with self._guard("read"):
                top = self._writer.execute("SELECT max(row) FROM events").fetchone()[0]
        except BaseException:
            self._lock_file.close()
            raise
        self._next_row = (top or 0) + 1

    def _connect(self, sync: str, checkpoint_pages: int) -> sqlite3.Connection:
        with self._guard("open"):
            # Autocommit off by hand (isolation_level=None) so each method's BEGIN/COMMIT
            # is exactly one transaction; check_same_thread off because the client's own
            # locks decide which thread uses a connection.
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=60
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={sync.upper()}")
            conn.execute(f"PRAGMA wal_autocheckpoint={checkpoint_pages}")
        return conn

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_FULL:
                raise SpoolError(
                    f"spool {self.path}: the disk (or the database's size limit) is full; "
                    "the event was not accepted. Free space, or stop tracking."
                ) from exc
            raise SpoolError(f"spool {self.path}: cannot {what}: {exc}") from exc

    def load(self) -> list[tuple[int, str, bytes]]:
        """Every row, oldest first: `(row, key, body)`."""
        with self._guard("read"):
            rows = self._writer.execute("SELECT row, key, body FROM events ORDER BY row")
            return [(r, k, bytes(b)) for r, k, b in rows]

    def append(
        self, events: Sequence[tuple[str, bytes]], checkpoint: str | None = None
    ) -> list[int]:
        """Write `(key, body)` pairs, and `checkpoint` when given, durably in one
        transaction; their rows, in order. Raises SpoolError (nothing written) when the
        transaction fails."""
        first = self._next_row
        rows = list(range(first, first + len(events)))
        with self._guard("write"), self._write_lock:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                self._writer.executemany(
                    "INSERT INTO events (row, key, body) VALUES (?, ?, ?)",
                    [(row, key, body) for row, (key, body) in zip(rows, events, strict=True)],
                )
                if checkpoint is not None:
                    self._writer.execute(
                        "INSERT OR REPLACE INTO meta (name, value) VALUES ('checkpoint', ?)",
                        (checkpoint,),
                    )
                self._writer.execute("COMMIT")
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    self._writer.execute("ROLLBACK")
                raise
        self._next_row = first + len(events)
        return rows

    def checkpoint(self) -> str | None:
        """The checkpoint last stored by `append`, or None."""
        with self._guard("read"):
            row = self._writer.execute(
                "SELECT value FROM meta WHERE name = 'checkpoint'"
            ).fetchone()
        return None if row is None else str(row[0])

    def delete(self, rows: Iterable[int]) -> None:
        """Forget `rows` (acknowledged, or refused for good), in one transaction."""
        self._update("DELETE FROM events WHERE row IN ({})", (), rows)

    def rekey(self, rows: Iterable[int], key: str) -> None:
        """Put `rows` under `key`, in one transaction."""
        self._update("UPDATE events SET key = ? WHERE row IN ({})", (key,), rows)

    def _update(self, sql: str, head: tuple[object, ...], rows: Iterable[int]) -> None:
        """Run `sql` for `rows`, its `{}` filled with one `?` per row (after the `head`
        parameters), a statement per `ROWS_PER_STATEMENT` rows: a quarter cheaper than
        a statement per row."""
        todo = list(rows)
        if not todo:
            return
        with self._guard("update"), self._write_lock:
            try:
                self._remover.execute("BEGIN IMMEDIATE")
                for at in range(0, len(todo), ROWS_PER_STATEMENT):
                    chunk = todo[at : at + ROWS_PER_STATEMENT]
                    self._remover.execute(sql.format(",".join("?" * len(chunk))), (*head, *chunk))
                self._remover.execute("COMMIT")
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    self._remover.execute("ROLLBACK")
                raise

    def _adopt_orphans(self) -> None:
        """Move the rows of `<path>.fork-<pid>` spools whose process is gone into this
        one, after its own rows, file by file; then delete those files."""
        for other in sorted(glob.glob(glob.escape(self.path) + FORK_INFIX + "*")):
            if other.endswith(("-wal", "-shm", "-journal", ".lock")):
                continue
            try:
                lock = _take_lock(other)
            except SpoolError:
                continue  # its process still runs
            try:
                with self._guard(f"adopt {other}"):
                    self._writer.execute("ATTACH DATABASE ? AS orphan", (other,))
                    try:
                        self._writer.execute("BEGIN")
                        self._writer.execute(
                            "INSERT INTO events (key, body) "
                            "SELECT key, body FROM orphan.events ORDER BY row"
                        )
                        self._writer.execute("COMMIT")
                    finally:
                        self._writer.execute("DETACH DATABASE orphan")
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(other + suffix)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(other + ".lock")
            finally:
                lock.close()

    def close(self) -> None:
        """Close the connections and give the spool up to the next process."""
        for conn in (self._writer, self._remover):
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._lock_file.close()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's connections and lock without
        touching them (they are the parent's; SQLite forbids using them across fork)."""
        _ABANDONED.extend((self._writer, self._remover, self._lock_file))


# Objects inherited across fork that must never be closed in the child (closing a SQLite
# connection there can release the parent's POSIX locks on the file).
_ABANDONED: list[object] = []


def _take_lock(path: str) -> TextIO:
    lock_path = path + ".lock"
    try:
        lock_file = open(lock_path, "a+")  # noqa: SIM115 - held for the spool's life
    except OSError as exc:
        raise SpoolError(f"spool {path}: cannot open its lock file: {exc}") from exc
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.close()
        raise SpoolError(f"spool {path} is in use by another process") from None
    return lock_file


def fork_path(path: str, pid: int) -> str:
    """The spool a child forked from the owner of `path` uses."""
    return f"{os.path.abspath(path)}{FORK_INFIX}{pid}"

"""Group commit for the spool: threads that track at once share one fsynced transaction,
and each returns only once the transaction holding its events is written.

One thread at a time writes. `GroupCommit.write` is thread-safe; `mutex` guards the
state and is what a fork must hold (the client takes it across `fork()`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from activity_client.errors import SpoolError

T = TypeVar("T")
# Writes `bodies` (lane, body) and a checkpoint in one transaction; the error, if any.
Commit = Callable[[list[tuple[int, bytes]], "str | None"], "SpoolError | None"]


class Group:
    """Events waiting for one spool transaction (lane, body), and how it went.

    Each thread that joined it, but for the one writing it, blocks on a lock of its own
    in `waiters`. Once the group is `done`, its writer releases the first of them, and
    each woken thread releases the next before it returns; the last releases `successor`,
    the waiting thread that writes the next group. A chain, not a broadcast: a broadcast
    wakes every thread at once into a fight for the GIL, which costs about twice the
    context switches (measured with 32 threads). The first waiter may instead be woken
    before the group is done: it was handed the writing of it."""

    __slots__ = ("bodies", "checkpoint", "done", "error", "successor", "waiters")

    def __init__(self) -> None:
        self.bodies: list[tuple[int, bytes]] = []
        self.checkpoint: str | None = None
        self.waiters: list[threading.Lock] = []
        self.successor: threading.Lock | None = None
        self.done = False
        self.error: SpoolError | None = None

    def wake_from(self, index: int) -> None:
        """Pass the wake-up on to waiter `index`, or after the last to the successor."""
        if index < len(self.waiters):
            self.waiters[index].release()
        elif self.successor is not None:
            self.successor.release()


class GroupCommit:
    """Groups the writes of concurrent threads into the transactions `commit` makes."""

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self.mutex = threading.Lock()
        self._idle = threading.Condition(self.mutex)  # no transaction running
        self.open = Group()  # the next transaction's events
        self._writing = False

    def when_idle(self, call: Callable[[], T]) -> T:
        """`call()`, run while no transaction is: not in the middle of another thread's."""
        with self.mutex:
            while self._writing:
                self._idle.wait()
            return call()

    def write(self, bodies: list[tuple[int, bytes]], checkpoint: str | None) -> Group:
        """Have `bodies` written in the next spool transaction; return its group once it
        is done. One thread at a time writes: the first to arrive while none does, then
        the first thread of the group that gathered meanwhile, handed over once the
        writer's own group is awake. So each transaction takes every event that arrived
        while the previous one ran, and only a group's own threads wake for it.

        The group stays open until its writer starts: the threads of the previous group,
        woken first, mostly track their next event in time to join it. Closed at once,
        every transaction would carry about half of the tracking threads' events.

        An interruption (KeyboardInterrupt) of a waiting thread is raised once it has
        done its part, after its transaction: the threads after it wait for it."""
        with self.mutex:
            group = self.open
            group.bodies.extend(bodies)
            if checkpoint is not None:
                group.checkpoint = checkpoint
            if self._writing:
                waiter = threading.Lock()
                waiter.acquire()
                index = len(group.waiters)
                group.waiters.append(waiter)
            else:
                self._writing = True
                self.open = Group()
                waiter = None
        interrupted: BaseException | None = None
        if waiter is not None:
            interrupted = _acquire_deferring(waiter)  # done, or handed over (not done)
            if group.done:
                group.wake_from(index + 1)
                if interrupted is not None:
                    raise interrupted
                return group
            with self.mutex:  # handed over: close the group to newcomers
                self.open = Group()
        group.error = self._commit(group.bodies, group.checkpoint)
        with self.mutex:
            group.done = True
            upcoming = self.open
            if upcoming.waiters:
                group.successor = upcoming.waiters[0]
            else:
                self._writing = False
                self._idle.notify_all()
        group.wake_from(0 if waiter is None else 1)  # a handed-over writer is waiter 0
        if interrupted is not None:
            raise interrupted
        return group


def _acquire_deferring(lock: threading.Lock) -> BaseException | None:
    """Acquire `lock` however often the wait is interrupted; the first interruption, for
    the caller to raise once it has done what other threads wait for."""
    interrupted: BaseException | None = None
    while True:
        try:
            lock.acquire()
            return interrupted
        except BaseException as exc:  # KeyboardInterrupt, or a signal handler's error
            interrupted = interrupted or exc

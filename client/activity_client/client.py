"""`EventClient`: `track()` returns at once; a background sender delivers every event
exactly once, in order, through retries, restarts and (with a spool) crashes."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from activity_client.batching import (
    Item,
    KeyGroups,
    assign_key,
    encode_event,
    halves,
    request_body,
    take_batch,
)
from activity_client.errors import ClientClosed, SpoolError
from activity_client.retry import Backoff
from activity_client.spool import Spool, fork_path
from activity_client.transport import Answer, Transport

logger = logging.getLogger(__name__)

BATCH_PATH = "/events/batch"
# The server's documented limits (docs/producer.md): 1,000 events and 4 MiB per batch
# by default. The defaults stay well under both.
SERVER_MAX_BATCH_EVENTS = 1000
DEFAULT_MAX_BATCH_EVENTS = 500
DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
WHEN_FULL = ("block", "drop")

ErrorCallback = Callable[[list[dict[str, Any]], str], None]
DropCallback = Callable[[dict[str, Any], str], None]


@dataclass(frozen=True)
class Counters:
    """What the client has done since it was made (in a forked child: since the fork).

    `tracked`: events accepted by `track()`; `sent`: acknowledged by the server (201);
    `failed`: refused by the server for good (reported to `on_error`); `dropped`: not
    accepted because the queue was full, or abandoned unsent at `close()` without a spool
    (reported to `on_drop`); `retries`: requests repeated; `queued`: accepted and not yet
    acknowledged or failed (with a spool, recovered events count here too)."""

    tracked: int
    sent: int
    failed: int
    dropped: int
    retries: int
    queued: int


class _Group:
    """Bodies waiting for one spool transaction, and how it went."""

    __slots__ = ("bodies", "checkpoint", "done", "error")

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.checkpoint: str | None = None
        self.done = False
        self.error: SpoolError | None = None


class EventClient:
    """Sends events to the producer's `/events/batch` from a background thread.

    Guarantees (details in client/README.md):
    - every accepted event is sent under an `Idempotency-Key` it keeps across every
      retry, so the server stores it once however often it is resent;
    - batches go one at a time, and a batch is settled (acknowledged, or its invalid
      items reported) before the next is sent, so one user's events keep their order;
    - 429, 5xx, 401/403 and connection failures are retried with jittered exponential
      backoff that honours `Retry-After`, without limit unless `max_retry_seconds` is
      set; a 413 halves the batch; items a 400 names invalid go to `on_error` and the
      rest is sent;
    - with `spool_path`, `track()` returns only once the event is in a SQLite file (WAL),
      which it leaves only when acknowledged or refused for good; a process that opens
      the same spool resends what is left under the same keys.

    Thread-safe. After `os.fork()` the child gets a sender of its own (and, with a spool,
    a spool file of its own); the parent's unsent events stay the parent's.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        *,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        when_full: str = "block",
        block_timeout: float = 10.0,
        request_timeout: float = 30.0,
        backoff: Backoff | None = None,
        max_retry_seconds: float | None = None,
        exit_timeout: float = 5.0,
        spool_sync: str = "full",
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
    ) -> None:
        _check_range("max_batch_events", max_batch_events, 1, SERVER_MAX_BATCH_EVENTS)
        _check_range("max_batch_bytes", max_batch_bytes, 1024, 1 << 30)
        _check_range("flush_interval", flush_interval, 0.0, 3600.0)
        _check_range("max_queue", max_queue, 1, 1 << 40)
        _check_range("block_timeout", block_timeout, 0.0, 1e6)
        _check_range("request_timeout", request_timeout, 0.1, 3600.0)
        _check_range("exit_timeout", exit_timeout, 0.0, 3600.0)
        if max_retry_seconds is not None:
            if spool_path is not None:
                raise ValueError("a spool never gives up: max_retry_seconds must stay None")
            _check_range("max_retry_seconds", max_retry_seconds, 0.0, 1e9)
        if when_full not in WHEN_FULL:
            raise ValueError(f"when_full must be one of {WHEN_FULL}, not {when_full!r}")
        self._url = url
        self._api_key = api_key
        self._transport = Transport(url, api_key, request_timeout)
        self._request_timeout = request_timeout
        self._max_events = max_batch_events
        self._max_bytes = max_batch_bytes
        self._interval = flush_interval
        self._max_queue = max_queue
        self._block = when_full == "block"
        self._block_timeout = block_timeout
        self._backoff = backoff or Backoff()
        self._max_retry = max_retry_seconds
        self._exit_timeout = exit_timeout
        self._on_error = on_error
        self._on_drop = on_drop
        self._spool_path = None if spool_path is None else os.fspath(spool_path)
        self._spool_sync = spool_sync
        self._spool: Spool | None = None
        self._reset_state()
        if self._spool_path is not None:
            self._spool = Spool(self._spool_path, spool_sync)
            self._recover()
        _CLIENTS.add(self)

    # -- state -------------------------------------------------------------------------

    def _reset_state(self) -> None:
        """Fresh locks, queue and counters: at start, and in a forked child."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the sender waits here for work
        self._progress = threading.Condition(self._lock)  # flush(), close(), full queue
        self._queue: deque[Item] = deque()
        self._work: deque[list[Item]] = deque()  # the batch being delivered, in parts
        self._groups = KeyGroups()
        self._next_seq = 0
        self._outstanding = 0
        self._flushing = 0
        self._closing = False
        self._closed = False
        self._stop = threading.Event()  # close() gave up waiting: the sender stops
        self._sender: threading.Thread | None = None
        self._tracked = self._sent = self._failed = self._dropped = self._retries = 0
        self._bad_seen = 0
        self._spool_cond = threading.Condition(threading.Lock())
        self._spool_group = _Group()
        self._spool_writing = False

    def _recover(self) -> None:
        """Queue what a previous process left in the spool, under its stored keys."""
        assert self._spool is not None
        rows = self._spool.load()
        with self._lock:
            for row, key, body in rows:
                self._queue.append(Item(self._next_seq, body, key, row))
                self._next_seq += 1
            self._outstanding += len(rows)
        if rows:
            logger.info("resending events left in the spool", extra={"events": len(rows)})
            self._start_sender()

    # -- the caller's side ---------------------------------------------------------

    def track(
        self, user_id: str, event_type: str, payload: Mapping[str, Any] | None = None
    ) -> bool:
        """Accept one event for sending; True if accepted, False if dropped (queue full).

        Returns without network I/O: at once in memory, or once the event is durably in
        the spool. When the queue holds `max_queue` unacknowledged events it waits up to
        `block_timeout` for room (`when_full="block"`) or not at all (`"drop"`), then
        drops the event, counts it and calls `on_drop`. Raises TypeError/ValueError for
        an event that cannot be sent as JSON, ClientClosed after `close()`, SpoolError
        when the spool cannot take it (disk full): the event was then not accepted."""
        body = encode_event(user_id, event_type, payload)
        if self._spool_path is not None:
            return self._track_spooled([body]) == 1
        return self._track_in_memory(body)

    def track_many(self, events: Iterable[Mapping[str, Any]], checkpoint: str | None = None) -> int:
        """Accept events given as `{"userId", "eventType", "payload"?}` mappings, in order;
        how many were accepted (the rest were dropped, as by `track()`).

        With a spool, the call is one transaction, the way to spool many events fast, and
        `checkpoint` (any string, e.g. a position in a file) is stored in that same
        transaction: `checkpoint()` then tells a later process where a backfill stopped.
        Every event is checked first: if one raises (as in `track()`), none is accepted."""
        bodies = [encode_event(*_fields(event)) for event in events]
        if self._spool_path is not None:
            return self._track_spooled(bodies, checkpoint)
        if checkpoint is not None:
            raise ValueError("a checkpoint needs a spool")
        return sum(self._track_in_memory(body) for body in bodies)

    def checkpoint(self) -> str | None:
        """The last checkpoint `track_many()` stored in the spool, by this process or an
        earlier one; None without one (or without a spool)."""
        if self._spool_path is None:
            return None
        with self._spool_cond:
            while self._spool_writing:  # not in the middle of another thread's transaction
                self._spool_cond.wait()
            return self._open_spool().checkpoint()

    def _track_in_memory(self, body: bytes) -> bool:
        with self._lock:
            if self._closing:
                raise ClientClosed("the client is closed")
            if self._outstanding >= self._max_queue and not self._wait_for_room():
                self._dropped += 1
                dropped = True
            else:
                dropped = False
                self._outstanding += 1
                key = self._groups.key_for(body)
                self._queue.append(Item(self._next_seq, body, key))
                self._next_seq += 1
                self._tracked += 1
                if len(self._queue) == self._max_events:
                    self._wake.notify()
        if dropped:
            self._report_drop(body, "the queue is full")
            return False
        if self._sender is None:
            self._start_sender()
        return True

    def _wait_for_room(self) -> bool:
        """With the lock held: wait for room in the queue as the policy says."""
        if not self._block or self._closing:
            return False
        deadline = time.monotonic() + self._block_timeout
        while self._outstanding >= self._max_queue:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return False
            self._progress.wait(remaining)
        return True

    def _admit(self, count: int) -> int:
        """Reserve room for up to `count` events; how many may go in."""
        with self._lock:
            if self._closing:
                raise ClientClosed("the client is closed")
            admitted = 0
            while admitted < count:
                if self._outstanding >= self._max_queue and not self._wait_for_room():
                    break
                self._outstanding += 1
                admitted += 1
            self._dropped += count - admitted
            return admitted

    def _track_spooled(self, bodies: list[bytes], checkpoint: str | None = None) -> int:
        """Write `bodies` (and `checkpoint`) to the spool, grouped with other threads'
        events into one transaction, then queue them; how many were accepted."""
        if self._closing:
            raise ClientClosed("the client is closed")
        admitted = self._admit(len(bodies))
        for body in bodies[admitted:]:
            self._report_drop(body, "the queue is full")
        if not admitted and checkpoint is None:
            return 0
        with self._spool_cond:
            group = self._spool_group
            group.bodies.extend(bodies[:admitted])
            if checkpoint is not None:
                group.checkpoint = checkpoint
            while not group.done:
                if self._spool_writing:
                    self._spool_cond.wait()
                    continue
                current, self._spool_group = self._spool_group, _Group()
                self._spool_writing = True
                self._spool_cond.release()
                try:
                    current.error = self._commit_group(current.bodies, current.checkpoint)
                finally:
                    self._spool_cond.acquire()
                    current.done = True
                    self._spool_writing = False
                    self._spool_cond.notify_all()
        if group.error is not None:
            raise SpoolError(str(group.error)) from group.error
        if self._sender is None:
            self._start_sender()
        return admitted

    def _commit_group(self, bodies: list[bytes], checkpoint: str | None) -> SpoolError | None:
        """One spool transaction for `bodies`, then queue them; the error, if any."""
        with self._lock:
            keys = [self._groups.key_for(body) for body in bodies]
        try:
            spool = self._open_spool()
            rows = spool.append(list(zip(keys, bodies, strict=True)), checkpoint)
        except SpoolError as exc:
            with self._lock:
                self._outstanding -= len(bodies)
                self._progress.notify_all()
            return exc
        with self._lock:
            for body, key, row in zip(bodies, keys, rows, strict=True):
                self._queue.append(Item(self._next_seq, body, key, row))
                self._next_seq += 1
            self._tracked += len(bodies)
            if len(self._queue) >= self._max_events:
                self._wake.notify()
        return None

    def _open_spool(self) -> Spool:
        if self._spool is None:
            # A forked child's own spool, opened on its first event.
            assert self._spool_path is not None
            self._spool = Spool(fork_path(self._spool_path, os.getpid()), self._spool_sync)
        return self._spool

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted before this call is settled; True if they were
        all acknowledged (201) and nothing was refused or dropped since the previous
        `flush()`, False on a timeout or when something was (see the callbacks)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._next_seq
            self._flushing += 1
            self._wake.notify()
            try:
                done = self._wait_settled(target, deadline)
            finally:
                self._flushing -= 1
            bad = self._failed + self._dropped
            clean = bad == self._bad_seen
            self._bad_seen = bad
        return done and clean

    def _wait_settled(self, target: int, deadline: float | None) -> bool:
        """With the lock held: wait until every event numbered below `target` is
        settled, or until `deadline`."""
        while self._low_water() < target:
            if self._sender is None or not self._sender.is_alive():
                if not self._queue and not self._work:
                    break
                self._lock.release()
                try:
                    self._start_sender()
                finally:
                    self._lock.acquire()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._progress.wait(remaining)
        return True

    def _low_water(self) -> int:
        """The number of the oldest event not yet settled (`_next_seq` when none)."""
        if self._work:
            return min(item.seq for part in self._work for item in part)
        if self._queue:
            return self._queue[0].seq
        return self._next_seq

    def close(self, timeout: float | None = None) -> bool:
        """Flush for up to `timeout` seconds, then stop the sender. True if everything was
        acknowledged. Events still unsent stay in the spool for the next process; without
        a spool they are dropped, counted and given to `on_drop`. Later `track()` calls
        raise ClientClosed; closing twice is harmless."""
        with self._lock:
            if self._closed:
                return self._outstanding == 0
            self._closing = True
            self._wake.notify()
            self._progress.notify_all()
        ok = self.flush(timeout)
        self._stop.set()
        sender = self._sender
        if sender is not None:
            with self._lock:
                self._wake.notify()
            sender.join(timeout=min(self._request_timeout, 1.0 if timeout is None else timeout))
        with self._lock:
            self._closed = True
            left = [item for part in self._work for item in part] + list(self._queue)
            if self._spool is None:
                self._queue.clear()
                self._work.clear()
                self._dropped += len(left)
                self._outstanding -= len(left)
        if sender is None or not sender.is_alive():
            # Otherwise the sender is stuck in a request; it owns these until it returns.
            self._transport.close()
            if self._spool is not None:
                self._spool.close()
        if self._spool is None:
            for item in left:
                self._report_drop(item.body, "the client closed before it was acknowledged")
        if left:
            logger.warning(
                "client closed with events unacknowledged",
                extra={"events": len(left), "spool": self._spool_path},
            )
        _CLIENTS.discard(self)
        return ok and not left

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(self._exit_timeout)

    def counters(self) -> Counters:
        """A consistent snapshot of the counters."""
        with self._lock:
            return Counters(
                tracked=self._tracked,
                sent=self._sent,
                failed=self._failed,
                dropped=self._dropped,
                retries=self._retries,
                queued=self._outstanding,
            )

    # -- the sender --------------------------------------------------------------------

    def _start_sender(self) -> None:
        with self._lock:
            if self._sender is not None and self._sender.is_alive():
                return
            self._sender = threading.Thread(
                target=self._run, name="activity-client-sender", daemon=True
            )
            self._sender.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                batch = self._next_batch()
                if batch is None:
                    return
                self._work.append(batch)
            try:
                self._deliver()
            except Exception:  # never let the sender die silently and take events with it
                logger.exception("activity-client sender failed; retrying the batch")
                if self._stop.wait(1.0):
                    return

    def _next_batch(self) -> list[Item] | None:
        """With the lock held: the next batch once it is full, `flush_interval` after the
        first event arrived, or at once when someone flushes; None to stop."""
        if self._work and not self._stop.is_set():
            return []  # a part left by a failed _deliver: deliver it again
        linger_until: float | None = None
        while not self._stop.is_set():
            if self._queue:
                now = time.monotonic()
                if linger_until is None:
                    linger_until = now + self._interval
                ready = (
                    len(self._queue) >= self._max_events
                    or self._flushing
                    or self._closing
                    or now >= linger_until
                )
                if ready:
                    return take_batch(self._queue, self._max_events, self._max_bytes)
                self._wake.wait(linger_until - now)
            elif self._closing:
                return None
            else:
                linger_until = None
                self._wake.wait()
        return None

    def _deliver(self) -> None:
        """Send the batch in `_work` until every part is settled: acknowledged, or
        refused for good. Parts go strictly in order, each retried until settled."""
        attempt = 0
        started = time.monotonic()
        while True:
            with self._lock:
                if not self._work:
                    return
                part = self._work[0]
                if not part:
                    self._work.popleft()
                    continue
            body = request_body(part)
            answer = self._transport.post(BATCH_PATH, body, part[0].key)
            if self._settle(part, body, answer):
                attempt = 0
                continue
            # Not settled: wait, then send the same part (same key) again.
            if self._max_retry is not None and time.monotonic() - started > self._max_retry:
                self._give_up(answer)
                return
            delay = self._backoff.delay(attempt, answer.retry_after)
            attempt += 1
            with self._lock:
                self._retries += 1
            logger.warning(
                "batch not acknowledged; retrying",
                extra={
                    "status": answer.status,
                    "error": answer.error or _error_type(answer),
                    "events": len(part),
                    "retry_in_seconds": round(delay, 3),
                },
            )
            if self._stop.wait(delay):
                return

    def _settle(self, part: list[Item], body: bytes, answer: Answer) -> bool:
        """Act on the answer to `part`; False when the same part must be retried after a
        backoff, True when the work moved on (something was settled or re-cut)."""
        status = answer.status
        if status == 201:
            self._settle_part(part, acked=part)
            return True
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        items = error.get("items") if isinstance(error, dict) else None
        if status == 207 and isinstance(answer.body, dict):
            ok = _indexes(answer.body.get("items"), len(part), status=201)
            if ok:
                rest = [it for i, it in enumerate(part) if i not in ok]
                self._settle_part(part, acked=[part[i] for i in sorted(ok)], rest=[rest])
            return False  # the rest was a 503: back off, then resend it
        if status == 400 and items:
            bad = _indexes(items, len(part))
            if bad:
                rest = [it for i, it in enumerate(part) if i not in bad]
                failed = [part[i] for i in sorted(bad)]
                self._settle_part(part, failed=failed, reason=_error_text(answer), rest=[rest])
                return True
        if status == 422 and isinstance(error, dict) and error.get("type") == "duplicate_items":
            first = min(_indexes(items, len(part)) or {0})
            if first > 0:
                # Nothing was published: the tail goes again under a fresh key.
                head, tail = part[:first], part[first:]
                key = assign_key(tail)
                if self._spool is not None:
                    self._spool.rekey([it.row for it in tail if it.row is not None], key)
                self._settle_part(part, rest=[head, tail])
                return True
        if status in (400, 413, 422):
            if len(part) > 1:
                if status == 413:
                    with self._lock:
                        self._max_bytes = max(1024, min(self._max_bytes, len(body) // 2))
                self._settle_part(part, rest=list(halves(part)))
                return True
            self._settle_part(part, failed=part, reason=_error_text(answer))
            return True
        return False  # 429, 5xx, 401, no answer, anything else: retry

    def _settle_part(
        self,
        part: list[Item],
        acked: Sequence[Item] = (),
        failed: Sequence[Item] = (),
        reason: str = "",
        rest: Sequence[list[Item]] = (),
    ) -> None:
        """Replace `part`, at the head of the work, by the `rest` parts (what is left of
        it, re-cut). Acknowledged events and events refused for good leave the spool
        first; the failed go to `on_error`."""
        if self._spool is not None and (acked or failed):
            try:
                self._spool.delete(it.row for it in (*acked, *failed) if it.row is not None)
            except SpoolError:
                # They stay in the file: the next process resends them under the same
                # keys, and the server's ids make that harmless.
                logger.exception("could not remove settled events from the spool")
        with self._lock:
            assert self._work and self._work[0] is part
            self._work.popleft()
            self._work.extendleft(reversed([p for p in rest if p]))
            self._sent += len(acked)
            self._failed += len(failed)
            self._outstanding -= len(acked) + len(failed)
            self._progress.notify_all()
        if failed:
            self._report_error([it.body for it in failed], reason)

    def _give_up(self, answer: Answer) -> None:
        """`max_retry_seconds` passed: everything in the work fails."""
        reason = f"gave up after max_retry_seconds; last answer: {_error_text(answer)}"
        while True:
            with self._lock:
                if not self._work:
                    return
                part = self._work[0]
            self._settle_part(part, failed=part, reason=reason)

    # -- callbacks ---------------------------------------------------------------------

    def _report_error(self, bodies: list[bytes], reason: str) -> None:
        events = [Item(0, body, "").event() for body in bodies]
        if self._on_error is None:
            logger.error("events refused", extra={"events": len(events), "reason": reason})
            return
        try:
            self._on_error(events, reason)
        except Exception:
            logger.exception("on_error callback failed")

    def _report_drop(self, body: bytes, reason: str) -> None:
        if self._on_drop is None:
            # The first and every 1,000th: an overload must not turn into a log flood.
            dropped = self._dropped
            if dropped == 1 or dropped % 1000 == 0:
                logger.warning("events dropped", extra={"dropped": dropped, "reason": reason})
            return
        try:
            self._on_drop(Item(0, body, "").event(), reason)
        except Exception:
            logger.exception("on_drop callback failed")

    # -- fork and exit -----------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A working client of its own for the child; the parent's unsent events stay
        the parent's (the child must not send them a second time)."""
        if self._spool is not None:
            self._spool.abandon()
            self._spool = None  # the child's own is opened on its first event
        self._transport = Transport(self._url, self._api_key, self._request_timeout)
        closed = self._closed
        self._reset_state()
        self._closed = self._closing = closed
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None and not closed:
            # multiprocessing's children leave through os._exit(): atexit never runs there,
            # its own finalizers do.
            mp_util.Finalize(self, _close_at_exit, args=(weakref.ref(self),), exitpriority=10)


def _fields(event: Mapping[str, Any]) -> tuple[str, str, Any]:
    return event["userId"], event["eventType"], event.get("payload")


def _indexes(items: Any, size: int, status: int | None = None) -> set[int]:
    """The valid `index` values in a server's `items` list (those with `status`, if
    given); anything malformed is ignored."""
    found: set[int] = set()
    if not isinstance(items, list):
        return found
    for entry in items:
        if not isinstance(entry, dict):
            continue
        index = entry.get("index")
        wanted = status is None or entry.get("status") == status
        if type(index) is int and 0 <= index < size and wanted:
            found.add(index)
    return found


def _error_type(answer: Answer) -> str:
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    return str(error.get("type", "")) if isinstance(error, dict) else ""


def _error_text(answer: Answer) -> str:
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    if isinstance(error, dict):
        return f"{answer.status} {error.get('type', '')}: {error.get('message', '')}"
    return f"{answer.status} {answer.error}".strip()


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], not {value!r}")


# -- every live client, for fork and exit -------------------------------------------------

_CLIENTS: weakref.WeakSet[EventClient] = weakref.WeakSet()


def _close_at_exit(ref: weakref.ref[EventClient]) -> None:
    client = ref()
    if client is not None:
        client.close(client._exit_timeout)


@atexit.register
def _close_all_at_exit() -> None:
    """Flush every client at interpreter exit, each bounded by its `exit_timeout`."""
    for client in list(_CLIENTS):
        try:
            client.close(client._exit_timeout)
        except Exception:
            logger.exception("closing an activity client at exit failed")


_HELD: list[EventClient] = []


def _before_fork() -> None:
    # Hold every client's locks across fork(), so the child's copy of each client is
    # not caught half-way through an update by another thread.
    _HELD[:] = list(_CLIENTS)
    for client in _HELD:
        client._spool_cond.acquire()
        client._lock.acquire()


def _after_fork_in_parent() -> None:
    for client in _HELD:
        client._lock.release()
        client._spool_cond.release()
    _HELD.clear()


def _after_fork_in_child() -> None:
    for client in _HELD:
        client._after_fork_in_child()
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )

__all__ = ["Counters", "EventClient"]

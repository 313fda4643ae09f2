"""`EventClient`: `track()` returns at once; a background sender delivers every event
exactly once, in order, through retries, restarts and (with a spool) crashes."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
import weakref
import zlib
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
from activity_client.group_commit import GroupCommit
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


class _Lane:
    """One sender: its queue, the batch it is delivering (in parts), the keys it hands
    out, its connection and its thread. A user's events always go to the same lane, so
    lanes send side by side without reordering any user's events."""

    __slots__ = ("groups", "index", "queue", "thread", "transport", "wake", "work")

    def __init__(self, index: int, lock: threading.Lock, transport: Transport) -> None:
        self.index = index
        self.queue: deque[Item] = deque()
        self.work: deque[list[Item]] = deque()
        self.groups = KeyGroups()
        self.transport = transport
        self.thread: threading.Thread | None = None
        self.wake = threading.Condition(lock)  # the lane's thread waits here for work

    def low_water(self) -> int | None:
        """With the lock held: the number of its oldest unsettled event, or None."""
        if self.work:
            return min(item.seq for part in self.work for item in part)
        return self.queue[0].seq if self.queue else None


class EventClient:
    """Sends events to the producer's `/events/batch` from background threads.

    Guarantees (details in client/README.md):
    - every accepted event is sent under an `Idempotency-Key` it keeps across every
      retry, so the server stores it once however often it is resent;
    - each user's events go through one of `senders` lanes (connections), and a lane
      settles a batch (acknowledged, or its invalid items reported) before it sends the
      next, so one user's events keep their order;
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
        senders: int = 4,
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
        _check_range("senders", senders, 1, 64)
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
        Transport(url, api_key, request_timeout)  # checks the URL now, not in a sender
        self._senders = int(senders)
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
        self._progress = threading.Condition(self._lock)  # flush(), close(), full queue
        self._lanes = [
            _Lane(i, self._lock, Transport(self._url, self._api_key, self._request_timeout))
            for i in range(self._senders)
        ]
        self._next_seq = 0
        self._outstanding = 0
        self._flushing = 0
        self._closing = False
        self._closed = False
        self._stop = threading.Event()  # close() gave up waiting: the senders stop
        self._tracked = self._sent = self._failed = self._dropped = self._retries = 0
        self._bad_seen = 0
        self._commits = GroupCommit(self._commit_group)  # the spool's transactions

    def _recover(self) -> None:
        """Queue what a previous process left in the spool, under its stored keys."""
        assert self._spool is not None
        rows = self._spool.load()
        with self._lock:
            for row, key, body in rows:
                lane = self._lanes[self._lane_of(json.loads(body)["userId"])]
                lane.queue.append(Item(self._next_seq, body, key, row))
                self._next_seq += 1
            self._outstanding += len(rows)
        if rows:
            logger.info("resending events left in the spool", extra={"events": len(rows)})
            for lane in self._lanes:
                if lane.queue:
                    self._start_sender(lane)

    def _lane_of(self, user_id: str) -> int:
        """The lane of a user's events: the same in every process with as many lanes
        (crc32, not hash(), which differs per process)."""
        if self._senders == 1:
            return 0
        return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % self._senders

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
        lane = self._lane_of(user_id)
        if self._spool_path is not None:
            return self._track_spooled([(lane, body)]) == 1
        return self._track_in_memory(lane, body)

    def track_many(self, events: Iterable[Mapping[str, Any]], checkpoint: str | None = None) -> int:
        """Accept events given as `{"userId", "eventType", "payload"?}` mappings, in order;
        how many were accepted (the rest were dropped, as by `track()`).

        With a spool, the call is one transaction, the way to spool many events fast, and
        `checkpoint` (any string, e.g. a position in a file) is stored in that same
        transaction: `checkpoint()` then tells a later process where a backfill stopped.
        Every event is checked first: if one raises (as in `track()`), none is accepted."""
        encoded = [(event["userId"], encode_event(*_fields(event))) for event in events]
        bodies = [(self._lane_of(user_id), body) for user_id, body in encoded]
        if self._spool_path is not None:
            return self._track_spooled(bodies, checkpoint)
        if checkpoint is not None:
            raise ValueError("a checkpoint needs a spool")
        return sum(self._track_in_memory(lane, body) for lane, body in bodies)

    def checkpoint(self) -> str | None:
        """The last checkpoint `track_many()` stored in the spool, by this process or an
        earlier one; None without one (or without a spool)."""
        if self._spool_path is None:
            return None
        return self._commits.when_idle(lambda: self._open_spool().checkpoint())

    def _track_in_memory(self, index: int, body: bytes) -> bool:
        lane = self._lanes[index]
        with self._lock:
            if self._closing:
                raise ClientClosed("the client is closed")
            if self._outstanding >= self._max_queue and not self._wait_for_room():
                self._dropped += 1
                dropped = True
            else:
                dropped = False
                self._outstanding += 1
                key = lane.groups.key_for(body)
                lane.queue.append(Item(self._next_seq, body, key))
                self._next_seq += 1
                self._tracked += 1
                if len(lane.queue) == self._max_events:
                    lane.wake.notify()
        if dropped:
            self._report_drop(body, "the queue is full")
            return False
        if lane.thread is None:
            self._start_sender(lane)
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

    def _track_spooled(self, bodies: list[tuple[int, bytes]], checkpoint: str | None = None) -> int:
        """Write `bodies` (and `checkpoint`) to the spool, grouped with other threads'
        events into one transaction, then queue them; how many were accepted."""
        if self._closing:
            raise ClientClosed("the client is closed")
        admitted = self._admit(len(bodies))
        for _, body in bodies[admitted:]:
            self._report_drop(body, "the queue is full")
        if not admitted and checkpoint is None:
            return 0
        group = self._commits.write(bodies[:admitted], checkpoint)
        if group.error is not None:
            raise SpoolError(str(group.error)) from group.error
        for lane, _ in bodies[:admitted]:
            if self._lanes[lane].thread is None:
                self._start_sender(self._lanes[lane])
        return admitted

    def _commit_group(
        self, bodies: list[tuple[int, bytes]], checkpoint: str | None
    ) -> SpoolError | None:
        """One spool transaction for `bodies`, then queue them; the error, if any."""
        with self._lock:
            keys = [self._lanes[lane].groups.key_for(body) for lane, body in bodies]
        pairs = [(key, body) for key, (_, body) in zip(keys, bodies, strict=True)]
        try:
            spool = self._open_spool()
            rows = spool.append(pairs, checkpoint)
        except SpoolError as exc:
            with self._lock:
                self._outstanding -= len(bodies)
                self._progress.notify_all()
            return exc
        with self._lock:
            for (index, body), key, row in zip(bodies, keys, rows, strict=True):
                lane = self._lanes[index]
                lane.queue.append(Item(self._next_seq, body, key, row))
                self._next_seq += 1
                if len(lane.queue) == self._max_events:
                    lane.wake.notify()
            self._tracked += len(bodies)
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
            self._wake_all()
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
            if self._stop.is_set():
                return False  # closed: no sender will settle them in this process
            for lane in self._lanes:
                idle = lane.thread is None or not lane.thread.is_alive()
                if idle and (lane.queue or lane.work):
                    self._lock.release()
                    try:
                        self._start_sender(lane)
                    finally:
                        self._lock.acquire()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._progress.wait(remaining)
        return True

    def _low_water(self) -> int:
        """The number of the oldest event not yet settled (`_next_seq` when none)."""
        lows = [low for lane in self._lanes if (low := lane.low_water()) is not None]
        return min(lows, default=self._next_seq)

    def _wake_all(self) -> None:
        for lane in self._lanes:
            lane.wake.notify()

    def close(self, timeout: float | None = None) -> bool:
        """Flush for up to `timeout` seconds, then stop the sender. True if everything was
        acknowledged. Events still unsent stay in the spool for the next process; without
        a spool they are dropped, counted and given to `on_drop`. Later `track()` calls
        raise ClientClosed; closing twice is harmless."""
        with self._lock:
            if self._closed:
                return self._outstanding == 0
            self._closing = True
            self._wake_all()
            self._progress.notify_all()
        ok = self.flush(timeout)
        self._stop.set()
        with self._lock:
            self._wake_all()
        grace = min(self._request_timeout, 1.0 if timeout is None else timeout)
        deadline = time.monotonic() + grace
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closed = True
            left: list[Item] = []
            for lane in self._lanes:
                left += [item for part in lane.work for item in part] + list(lane.queue)
                if self._spool is None:
                    lane.queue.clear()
                    lane.work.clear()
            if self._spool is None:
                self._dropped += len(left)
                self._outstanding -= len(left)
        stuck = False
        for lane in self._lanes:
            if lane.thread is not None and lane.thread.is_alive():
                stuck = True  # in a request: it owns its connection until that returns
            else:
                lane.transport.close()
        if self._spool is not None and not stuck:
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

    def _start_sender(self, lane: _Lane) -> None:
        with self._lock:
            if lane.thread is not None and lane.thread.is_alive():
                return
            lane.thread = threading.Thread(
                target=self._run,
                args=(lane,),
                name=f"activity-client-sender-{lane.index}",
                daemon=True,
            )
            lane.thread.start()

    def _run(self, lane: _Lane) -> None:
        while not self._stop.is_set():
            with self._lock:
                batch = self._next_batch(lane)
                if batch is None:
                    return
                lane.work.append(batch)
            try:
                self._deliver(lane)
            except Exception:  # never let the sender die silently and take events with it
                logger.exception("activity-client sender failed; retrying the batch")
                if self._stop.wait(1.0):
                    return

    def _next_batch(self, lane: _Lane) -> list[Item] | None:
        """With the lock held: the lane's next batch once it is full, `flush_interval`
        after its first event arrived, or at once when someone flushes; None to stop."""
        if lane.work and not self._stop.is_set():
            return []  # a part left by a failed _deliver: deliver it again
        linger_until: float | None = None
        while not self._stop.is_set():
            if lane.queue:
                now = time.monotonic()
                if linger_until is None:
                    linger_until = now + self._interval
                ready = (
                    len(lane.queue) >= self._max_events
                    or self._flushing
                    or self._closing
                    or now >= linger_until
                )
                if ready:
                    return take_batch(lane.queue, self._max_events, self._max_bytes)
                lane.wake.wait(linger_until - now)
            elif self._closing:
                return None
            else:
                linger_until = None
                lane.wake.wait()
        return None

    def _deliver(self, lane: _Lane) -> None:
        """Send the batch in the lane's work until every part is settled: acknowledged,
        or refused for good. Parts go strictly in order, each retried until settled."""
        attempt = 0
        started = time.monotonic()
        while True:
            with self._lock:
                if not lane.work:
                    return
                part = lane.work[0]
                if not part:
                    lane.work.popleft()
                    continue
            body = request_body(part)
            answer = lane.transport.post(BATCH_PATH, body, part[0].key)
            if self._settle(lane, part, body, answer):
                attempt = 0
                continue
            # Not settled: wait, then send the same part (same key) again.
            if self._max_retry is not None and time.monotonic() - started > self._max_retry:
                self._give_up(lane, answer)
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

    def _settle(self, lane: _Lane, part: list[Item], body: bytes, answer: Answer) -> bool:
        """Act on the answer to `part`; False when the same part must be retried after a
        backoff, True when the work moved on (something was settled or re-cut)."""
        status = answer.status
        if status == 201:
            self._settle_part(lane, part, acked=part)
            return True
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        items = error.get("items") if isinstance(error, dict) else None
        if status == 207 and isinstance(answer.body, dict):
            ok = _indexes(answer.body.get("items"), len(part), status=201)
            if ok:
                rest = [it for i, it in enumerate(part) if i not in ok]
                self._settle_part(lane, part, acked=[part[i] for i in sorted(ok)], rest=[rest])
            return False  # the rest was a 503: back off, then resend it
        if status == 400 and items:
            bad = _indexes(items, len(part))
            if bad:
                rest = [it for i, it in enumerate(part) if i not in bad]
                failed = [part[i] for i in sorted(bad)]
                self._settle_part(
                    lane, part, failed=failed, reason=_error_text(answer), rest=[rest]
                )
                return True
        if status == 422 and isinstance(error, dict) and error.get("type") == "duplicate_items":
            first = min(_indexes(items, len(part)) or {0})
            if first > 0:
                # Nothing was published: the tail goes again under a fresh key.
                head, tail = part[:first], part[first:]
                key = assign_key(tail)
                if self._spool is not None:
                    self._spool.rekey([it.row for it in tail if it.row is not None], key)
                self._settle_part(lane, part, rest=[head, tail])
                return True
        if status in (400, 413, 422):
            if len(part) > 1:
                if status == 413:
                    with self._lock:
                        self._max_bytes = max(1024, min(self._max_bytes, len(body) // 2))
                self._settle_part(lane, part, rest=list(halves(part)))
                return True
            self._settle_part(lane, part, failed=part, reason=_error_text(answer))
            return True
        return False  # 429, 5xx, 401, no answer, anything else: retry

    def _settle_part(
        self,
        lane: _Lane,
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
            assert lane.work and lane.work[0] is part
            lane.work.popleft()
            lane.work.extendleft(reversed([p for p in rest if p]))
            self._sent += len(acked)
            self._failed += len(failed)
            self._outstanding -= len(acked) + len(failed)
            self._progress.notify_all()
        if failed:
            self._report_error([it.body for it in failed], reason)

    def _give_up(self, lane: _Lane, answer: Answer) -> None:
        """`max_retry_seconds` passed: everything in the lane's work fails."""
        reason = f"gave up after max_retry_seconds; last answer: {_error_text(answer)}"
        while True:
            with self._lock:
                if not lane.work:
                    return
                part = lane.work[0]
            self._settle_part(lane, part, failed=part, reason=reason)

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
        client._commits.mutex.acquire()
        client._lock.acquire()


def _after_fork_in_parent() -> None:
    for client in _HELD:
        client._lock.release()
        client._commits.mutex.release()
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

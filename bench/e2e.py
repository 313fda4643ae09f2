"""End-to-end latency of `make bench`: from the producer's 201 to the event being readable
through the consumer's read API, at a steady rate.

* The sender is open loop: the i-th request leaves at start + i/rate whatever earlier
  answers do (a new keep-alive connection is opened whenever all are busy), so a slow
  service meets more load, not less. It is one thread of non-blocking sockets that does
  nothing but send and read, and it reports how late each request left (`late_*`): when
  the machine starves it, the figures say so rather than hide it. The 201's time is the
  kernel's receive stamp of the answer (SO_TIMESTAMPNS), not when the sender read it.
* The watcher is a separate process that records when each eventId first became
  readable. By default it polls the Redis index the read API pages through
  (`<prefix>:index`, written in the same script as the event's body, so an id there is
  an id `GET /events/processed/<id>` serves), about every millisecond: cheap enough not to
  slow what it watches on a small machine. `--e2e-watch api` pages through
  `GET /events/processed` instead, at the cost of a request per poll on the read API.
  Its stamp is taken after the poll's answer is read, so a starved watcher errs late.
  Both sides use CLOCK_REALTIME (the kernel's stamps are on it) on the same machine.
* latency = seen - 201. The first `warmup` seconds are sent but not counted. Afterwards a
  sample of the events is fetched through `GET /events/processed/<id>`.

    .venv/bin/python -m bench.e2e watch --redis-url redis://127.0.0.1:6379/0 --prefix P --out f
"""

from __future__ import annotations

import argparse
import http.client
import json
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import redis

from bench.common import percentile, progress
from consumer_service.storage.keys import KeyLayout

BODY = (
    '{{"userId":"user-{u}","eventType":"PRODUCT_VIEW",'
    '"payload":{{"productId":"sku-{i}","price":19.99,"currency":"EUR"}}}}'
)


# -- sender ---------------------------------------------------------------------------

# Linux: with SO_TIMESTAMPNS set, recvmsg() returns, with each read, the kernel's
# CLOCK_REALTIME stamp of when the data reached the socket. The 201's time is then when
# the answer arrived, not when a busy sender got round to reading it: on a loaded machine
# the two differ by tens of milliseconds, and the watcher (which stamps on its own) then
# saw most events "before" their 201.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


@dataclass(frozen=True)
class Sent:
    """One request: status 0 when it failed without an HTTP answer; `late` is how long
    after its scheduled time it left; `answered` is when the answer's last byte reached
    the socket (kernel stamp, or the read's own time where the kernel gave none). Times
    are CLOCK_REALTIME seconds, the watcher's clock."""

    index: int
    status: int
    event_id: str | None
    sent: float
    late: float
    answered: float


class _Connection:
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.buf = bytearray()
        self.request: tuple[int, float, float, bytes] | None = None  # index, due, sent, body
        self.resent = False

    def send(self, host: str, index: int, due: float, body: bytes) -> None:
        # Stamped before the write: the answer may arrive before sendall() returns to us.
        sent = time.time()
        self.sock.sendall(
            f"POST /events/generate HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.request = (index, due, sent, body)

    def read(self) -> tuple[bytes, float]:
        """What the socket holds and when it arrived; b"" when the server closed."""
        data, ancillary, _flags, _addr = self.sock.recvmsg(65536, 64)
        stamp = time.time()
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanos = _TIMESPEC.unpack(raw[: _TIMESPEC.size])
                stamp = seconds + nanos / 1e9
        return data, stamp

    def answer(self) -> tuple[int, bytes] | None:
        """The complete response in the buffer (consumed from it), or None."""
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(self.buf[:head_end]).split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buf) < head_end + 4 + length:
            return None
        body = bytes(self.buf[head_end + 4 : head_end + 4 + length])
        del self.buf[: head_end + 4 + length]
        return int(head[0].split()[1]), body

    def close(self) -> None:
        self.sock.close()


def _send(port: int, rate: float, total: int) -> list[Sent]:
    """Open loop on one thread with non-blocking waits: the i-th request leaves at
    start + i/rate whatever earlier answers do, on an idle keep-alive connection or a
    new one. Nothing but sending and reading runs here, so the schedule holds unless the
    machine itself denies this process the CPU, and `late` records by how much it did."""
    host = f"127.0.0.1:{port}"
    selector = selectors.DefaultSelector()
    idle: deque[_Connection] = deque()
    results: list[Sent] = []
    busy = 0

    def finish(conn: _Connection, status: int, body: bytes, answered: float) -> None:
        assert conn.request is not None
        index, due, sent, _ = conn.request
        event_id = json.loads(body).get("eventId") if status == 201 else None
        results.append(Sent(index, status, event_id, sent, sent - due, answered))
        conn.request = None
        conn.resent = False

    def drop(conn: _Connection) -> None:
        selector.unregister(conn.sock)
        conn.close()

    start = time.time()
    noted = start
    i = 0
    while i < total or busy:
        now = time.time()
        while i < total and start + i / rate <= now:
            conn = idle.popleft() if idle else None
            if conn is None:
                conn = _Connection(port)
                selector.register(conn.sock, selectors.EVENT_READ, conn)
            conn.send(host, i, start + i / rate, BODY.format(u=i % 1000, i=i).encode())
            busy += 1
            i += 1
        if now - noted > 10:
            noted = now
            progress(f"  {i:,} of {total:,} sent, {len(results):,} answered")
        if i >= total and now > start + total / rate + 60:
            break
        timeout = max(0.0, start + i / rate - time.time()) if i < total else 0.5
        for key, _ in selector.select(timeout):
            conn = cast("_Connection", key.data)
            try:
                data, stamp = conn.read()
            except OSError:
                data, stamp = b"", time.time()
            if not data:
                drop(conn)
                request = conn.request
                if request is None:
                    continue
                if not conn.buf and not conn.resent:
                    # The server had closed this keep-alive connection before reading the
                    # request: nothing was processed, so it goes again on a new one.
                    fresh = _Connection(port)
                    selector.register(fresh.sock, selectors.EVENT_READ, fresh)
                    index, due, _, body = request
                    fresh.send(host, index, due, body)
                    fresh.resent = True
                    continue
                index, due, sent, _ = request
                results.append(Sent(index, 0, None, sent, sent - due, stamp))
                busy -= 1
                continue
            conn.buf += data
            answer = conn.answer()
            if answer is not None and conn.request is not None:
                finish(conn, *answer, stamp)
                busy -= 1
                idle.append(conn)
    for key in list(selector.get_map().values()):
        cast("_Connection", key.data).close()
    selector.close()
    return results


# -- watcher ---------------------------------------------------------------------------


class _Stop:
    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, _signum: int, _frame: Any) -> None:
        self.requested = True


def watch_redis(url: str, prefix: str, pause_ms: float) -> dict[str, Any]:
    stop = _Stop()
    client = redis.Redis.from_url(url)
    keys = KeyLayout(prefix)
    index = keys.index
    cursor = 0
    seen: dict[str, list[Any]] = {}
    polls = 0
    while not stop.requested:
        rows = client.zrangebyscore(index, f"({cursor}", "+inf", start=0, num=5000, withscores=True)
        now = time.time()
        polls += 1
        if not rows:
            time.sleep(pause_ms / 1000)
            continue
        ids = [member.decode() for member, _ in cast("list[tuple[bytes, float]]", rows)]
        bodies = client.mget([keys.event(i) for i in ids])
        for event_id, body in zip(ids, bodies, strict=True):
            event = json.loads(body) if body else {}
            seen[event_id] = [now, event.get("timestamp"), event.get("processedAt")]
        cursor = int(cast("list[tuple[bytes, float]]", rows)[-1][1])
    client.close()
    return {"seen": seen, "errors": 0, "polls": polls}


def watch_api(url: str, pause_ms: float) -> dict[str, Any]:
    """Pages through the read API. The cursor continues from the page's `next`, or after
    the last event of a final page: one prefix's index is one contiguous sequence."""
    stop = _Stop()
    conn = http.client.HTTPConnection(url.removeprefix("http://").rstrip("/"), timeout=10)
    cursor = 0
    seen: dict[str, list[Any]] = {}
    errors = 0
    polls = 0
    while not stop.requested:
        try:
            conn.request("GET", f"/events/processed?limit=1000&cursor={cursor}")
            answer = conn.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            time.sleep(0.05)
            continue
        now = time.time()
        polls += 1
        if answer.status != 200:
            errors += 1
            time.sleep(0.05)
            continue
        page = json.loads(body)
        for event in page["events"]:
            seen.setdefault(event["eventId"], [now, event["timestamp"], event["processedAt"]])
        cursor = int(page["next"]) if page["next"] is not None else cursor + len(page["events"])
        if not page["events"]:
            time.sleep(pause_ms / 1000)
    conn.close()
    return {"seen": seen, "errors": errors, "polls": polls}


# -- the measurement -------------------------------------------------------------------


def _iso_ms(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def run(
    producer_port: int,
    consumer_port: int,
    redis_url: str,
    prefix: str,
    wait_stored: Callable[[int], bool],
    *,
    rate: float,
    seconds: float,
    warmup: float,
    source: str = "redis",
    pause_ms: float = 1.0,
) -> dict[str, Any]:
    """Measure end to end latency against running services. `wait_stored(n)` blocks
    until the consumer has stored `n` more events than before the run (False if it gave
    up), so the watcher is stopped only once it could have seen them all."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        out = Path(tmp) / "seen.json"
        watcher = subprocess.Popen(
            [sys.executable, "-m", "bench.e2e", "watch", "--source", source,
             "--redis-url", redis_url, "--prefix", prefix,
             "--api-url", f"http://127.0.0.1:{consumer_port}",
             "--out", str(out), "--pause-ms", str(pause_ms)],
            start_new_session=True,
        )  # fmt: skip
        try:
            total = int(rate * (warmup + seconds))
            progress(
                f"  {total:,} events at {rate:g}/s over {warmup + seconds:g} s "
                f"(the first {warmup:g} s not counted), watcher: {source}"
            )
            results = _send(producer_port, rate, total)
            acked = sum(1 for r in results if r.status == 201)
            if not wait_stored(acked):
                progress("  not every acked event was stored in time")
            time.sleep(0.2 + pause_ms / 1000)
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(30)
        watched = json.loads(out.read_text())
    seen: dict[str, list[Any]] = watched["seen"]
    skip = int(rate * warmup)
    counted = [r for r in results if r.index >= skip]
    ok = [r for r in counted if r.status == 201 and r.event_id is not None]
    latencies: list[float] = []
    before_201 = 0
    lost = 0
    for r in ok:
        assert r.event_id is not None
        if r.event_id not in seen:
            lost += 1
            continue
        delta = seen[r.event_id][0] - r.answered
        if delta < 0:
            before_201 += 1
        latencies.append(max(0.0, delta))
    # The services' own wall clocks, the measure the first end-to-end figures used.
    stamped = [
        _iso_ms(seen[r.event_id][2]) - _iso_ms(seen[r.event_id][1])
        for r in ok
        if r.event_id in seen and seen[r.event_id][1] and seen[r.event_id][2]
    ]
    # Where 201 -> seen goes: the worker's own processedAt (ms resolution, on the same
    # clock) splits it into the product's part and the watcher's.
    worker_part: list[float] = []
    watcher_part: list[float] = []
    for r in ok:
        row = seen.get(r.event_id or "")
        if row and row[2]:
            processed = _iso_ms(row[2]) / 1000
            worker_part.append(processed - r.answered)
            watcher_part.append(row[0] - processed)
    sends = sorted(r.sent for r in counted)
    span = sends[-1] - sends[0] if len(sends) > 1 else 0.0
    return {
        "rate": rate,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "watcher": source,
        "sent": len(counted),
        "acked": len(ok),
        "non_201": len(counted) - len(ok),
        "achieved_send_rate": round((len(sends) - 1) / span, 1) if span else None,
        "sends_late_over_10ms": sum(1 for r in counted if r.late > 0.01),
        "late_p50_ms": _ms(percentile([r.late for r in counted], 50)),
        "late_p99_ms": _ms(percentile([r.late for r in counted], 99)),
        "late_max_ms": _ms(max((r.late for r in counted), default=None)),
        "answer_p50_ms": _ms(percentile([r.answered - r.sent for r in ok], 50)),
        "answer_p99_ms": _ms(percentile([r.answered - r.sent for r in ok], 99)),
        "not_seen": lost,
        "seen_before_201": before_201,
        "watch_polls": watched["polls"],
        "watch_errors": watched["errors"],
        "read_api_sample_ok": _read_api_sample(consumer_port, [r.event_id for r in ok]),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "processed_at_after_201_p50_ms": _ms(percentile(worker_part, 50)),
        "processed_at_after_201_p99_ms": _ms(percentile(worker_part, 99)),
        "seen_after_processed_at_p50_ms": _ms(percentile(watcher_part, 50)),
        "seen_after_processed_at_p99_ms": _ms(percentile(watcher_part, 99)),
        "timestamp_to_processed_at_p50_ms": percentile(stamped, 50),
        "timestamp_to_processed_at_p99_ms": percentile(stamped, 99),
    }


def _read_api_sample(port: int, event_ids: list[str | None], size: int = 50) -> bool:
    """True when the read API serves every one of an evenly spread sample of the events."""
    ids = [i for i in event_ids if i is not None]
    sample = ids[:: max(1, len(ids) // size)][:size]
    conn = http.client.HTTPConnection(f"127.0.0.1:{port}", timeout=10)
    try:
        for event_id in sample:
            conn.request("GET", f"/events/processed/{event_id}")
            answer = conn.getresponse()
            body = answer.read()
            if answer.status != 200 or json.loads(body).get("eventId") != event_id:
                return False
    finally:
        conn.close()
    return bool(sample)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description="the end-to-end watcher (run by report.py)")
    parser.add_argument("mode", choices=["watch"])
    parser.add_argument("--source", choices=["redis", "api"], default="redis")
    parser.add_argument("--redis-url")
    parser.add_argument("--prefix")
    parser.add_argument("--api-url")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pause-ms", type=float, default=1.0)
    args = parser.parse_args()
    if args.source == "redis":
        result = watch_redis(args.redis_url, args.prefix, args.pause_ms)
    else:
        result = watch_api(args.api_url, args.pause_ms)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

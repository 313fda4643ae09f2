"""End-to-end latency of `make bench`: from the producer's 201 to the event being readable
through the consumer's read API, at a steady rate.

* The sender is open loop: the i-th request leaves at start + i/rate whatever earlier
  answers do (a new keep-alive connection is opened whenever all are busy), so a slow
  service meets more load, not less. It records each eventId and when its 201 arrived.
* The watcher is a separate process that records when each eventId first became
  readable. By default it polls the Redis index the read API pages through
  (`<prefix>:index`, written in the same script as the event's body, so an id there is
  an id `GET /events/processed/<id>` serves), about every millisecond: cheap enough not to
  slow what it watches on a small machine. `--e2e-watch api` pages through
  `GET /events/processed` instead, at the cost of a request per poll on the read API.
  Both use the system-wide monotonic clock.
* latency = seen - 201. The first `warmup` seconds are sent but not counted. Afterwards a
  sample of the events is fetched through `GET /events/processed/<id>`.

    .venv/bin/python -m bench.e2e watch --redis-url redis://127.0.0.1:6379/0 --prefix P --out f
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import signal
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

BODY = (
    '{{"userId":"user-{u}","eventType":"PRODUCT_VIEW",'
    '"payload":{{"productId":"sku-{i}","price":19.99,"currency":"EUR"}}}}'
)


# -- sender ----------------------------------------------------------------------------


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False

    async def post(self, host: str, path: str, body: bytes) -> tuple[int, bytes]:
        """One request; (0, b"") when the server had closed this keep-alive connection
        before reading it (nothing was processed, so the caller may resend)."""
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        if not status_line:
            return 0, b""
        self.used = True
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


@dataclass(frozen=True)
class Sent:
    """One request: status 0 when it failed without an HTTP answer; `late` is how long
    after its scheduled time it left."""

    index: int
    status: int
    event_id: str | None
    sent: float
    late: float
    answered: float


async def _send(port: int, rate: float, total: int) -> list[Sent]:
    host = f"127.0.0.1:{port}"
    # First in, first out: every open connection keeps being used, so none sits idle past
    # the server's keep-alive timeout.
    idle: deque[_Connection] = deque()
    results: list[Sent] = []
    tasks: set[asyncio.Task[None]] = set()

    async def connect() -> _Connection:
        return _Connection(*await asyncio.open_connection("127.0.0.1", port))

    async def one(i: int, due: float) -> None:
        body = BODY.format(u=i % 1000, i=i).encode()
        conn = idle.popleft() if idle else await connect()
        sent = time.monotonic()
        try:
            status, answer = await conn.post(host, "/events/generate", body)
            if status == 0:
                conn.writer.close()
                conn = await connect()
                status, answer = await conn.post(host, "/events/generate", body)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            conn.writer.close()
            results.append(Sent(i, 0, None, sent, sent - due, time.monotonic()))
            return
        now = time.monotonic()
        event_id = json.loads(answer).get("eventId") if status == 201 else None
        results.append(Sent(i, status, event_id, sent, sent - due, now))
        idle.append(conn)

    start = time.monotonic()
    noted = start
    for i in range(total):
        if time.monotonic() - noted > 10:
            noted = time.monotonic()
            progress(f"  {i:,} of {total:,} sent, {len(results):,} answered")
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    for conn in idle:
        conn.writer.close()
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
    index = f"{prefix}:index"
    cursor = 0
    seen: dict[str, list[Any]] = {}
    polls = 0
    while not stop.requested:
        rows = client.zrangebyscore(index, f"({cursor}", "+inf", start=0, num=5000, withscores=True)
        now = time.monotonic()
        polls += 1
        if not rows:
            time.sleep(pause_ms / 1000)
            continue
        ids = [member.decode() for member, _ in cast("list[tuple[bytes, float]]", rows)]
        bodies = client.mget([f"{prefix}:event:{i}" for i in ids])
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
        now = time.monotonic()
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
            results = asyncio.run(_send(producer_port, rate, total))
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
    # The services' own wall clocks, the measure issue 8's first figures used.
    stamped = [
        _iso_ms(seen[r.event_id][2]) - _iso_ms(seen[r.event_id][1])
        for r in ok
        if r.event_id in seen and seen[r.event_id][1] and seen[r.event_id][2]
    ]
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
        "not_seen": lost,
        "seen_before_201": before_201,
        "watch_polls": watched["polls"],
        "watch_errors": watched["errors"],
        "read_api_sample_ok": _read_api_sample(consumer_port, [r.event_id for r in ok]),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies) if latencies else None),
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

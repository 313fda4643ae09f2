"""What every part of `make bench` shares: progress lines, topics, a Redis, service
processes, process memory, pipeline-shaped records and percentiles.

Nothing here measures anything; the measuring modules (intake, consumer_throughput, e2e,
memory, baselines) build on it, and report.py runs them in order.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from consumer_service.storage.keys import KeyLayout, data_key, data_key_erasures  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from shared.data_keys import DataKeys  # noqa: E402
from shared.events import enrich, record_headers  # noqa: E402
from shared.json_codec import compact_json  # noqa: E402
from shared.payload_crypto import parse_master_keys, seal  # noqa: E402

BIN = Path(sys.executable).parent
PARTITIONS = 6  # the services' default (KAFKA_TOPIC_PARTITIONS); every bench topic has it
EVENT_TYPES = ("LOGIN", "LOGOUT", "PRODUCT_VIEW")
_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One line on stderr, stamped with the seconds since the bench started."""
    print(f"[bench {time.monotonic() - _STARTED:5.0f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- Kafka topics ----------------------------------------------------------------------


def create_topics(bootstrap: str, names: Sequence[str]) -> None:
    ensure_topics(bootstrap, list(names), PARTITIONS)


def admin_client(bootstrap: str) -> AdminClient:
    # Quiet: librdkafka's notices (a purged background queue at exit) are not progress.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Delete the topics, waiting for the broker's answer; a missing one is no error."""
    admin = admin_client(bootstrap)
    for future in admin.delete_topics(list(names), operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


# -- Redis -----------------------------------------------------------------------------


class BenchRedis:
    """The Redis the consumer side of the bench stores into.

    By default a private redis-server on a free port, configured as production runs it
    (AOF, `appendfsync always`), so that no other user's writes enter the memory figures
    and the fsync policy is known. With `url`, that Redis is used instead (the smoke test
    points it at the shared one); every key the bench wrote there is deleted afterwards.
    """

    def __init__(self, url: str | None = None) -> None:
        self.private = url is None
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        if url is None:
            self._dir = tempfile.mkdtemp(prefix="bench-redis-")
            port = free_port()
            self._proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", self._dir,
                 "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            url = f"redis://127.0.0.1:{port}/0"
        self.url = url
        self.client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.close()
                    raise SystemExit(f"Redis at {url} did not answer") from None
                time.sleep(0.05)

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def fsync_policy(self) -> str:
        try:
            aof = self.client.config_get("appendonly").get("appendonly", "?")
            fsync = self.client.config_get("appendfsync").get("appendfsync", "?")
        except redis.ResponseError:
            return "unknown (CONFIG disabled)"
        return f"appendonly {aof}, appendfsync {fsync}"

    def delete_prefix(self, prefix: str) -> None:
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=KeyLayout(prefix).pattern, count=10_000):
            batch.append(key)
            if len(batch) == 10_000:
                self.client.unlink(*batch)
                batch.clear()
        if batch:
            self.client.unlink(*batch)

    def close(self) -> None:
        self.client.close()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def pipeline_counts(client: redis.Redis, prefix: str) -> tuple[int, int]:
    """(processed, duplicates) the consumer counted under `prefix`: the stats hash of the
    store's key layout (consumer_service/storage/keys.py), read directly so it works with
    the read API off and costs the replicas nothing."""
    raw = client.hmget(KeyLayout(prefix).stats, ["processed", "duplicates"])
    return int(raw[0] or 0), int(raw[1] or 0)


# -- service processes -----------------------------------------------------------------


@dataclass
class Service:
    """One `producer-service` or `consumer-service` process (and the children it forks),
    started in its own session so that stopping it never touches anything else."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int | None
    log_path: Path | None = None
    _log_file: Any = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        name: str,
        script: str | Sequence[str],
        env: Mapping[str, str],
        port: int | None,
        log_dir: Path | None,
    ) -> Service:
        log_path = None if log_dir is None else log_dir / f"{name}.log"
        # The services log one JSON line per event at their default level; that cost is
        # part of what is measured, so the lines are written and then dropped (or kept
        # with --service-logs).
        out = open(os.devnull if log_path is None else log_path, "wb")  # noqa: SIM115
        # Each service process tree keeps its own metrics directory (a shared one would
        # mix their counts), so an inherited one is not passed on.
        inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        # A console script of the venv by name, or a whole command.
        argv = [str(BIN / script)] if isinstance(script, str) else list(script)
        proc = subprocess.Popen(
            argv,
            env={**inherited, **env},
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        return cls(name, proc, port, log_path, out)

    def wait_ready(self, path: str = "/ready", timeout: float = 60) -> None:
        assert self.port is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"{self.name} exited with {self.proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.name} was not ready in {timeout:.0f} s") from None
                time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> list[int]:
        """The process and all its descendants."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (the services' graceful stop), then SIGKILL to its process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()


def stop_all(services: Sequence[Service]) -> None:
    for service in services:
        service.stop()


# -- process memory (Linux /proc) ------------------------------------------------------


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after its last ')' do not.
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far (all their threads), from
    /proc/<pid>/stat; a process that has gone counts nothing."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name; utime and stime are fields 14, 15.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = parent_of(int(entry.name))
            if parent is not None:
                parents.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in sorted(parents.get(todo.pop(), [])):
            found.append(child)
            todo.append(child)
    return found


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


# -- records ---------------------------------------------------------------------------


def pipeline_record(i: int, users: int = 1000) -> dict[str, Any]:
    """The i-th event as the producer would publish it (enriched, fresh eventId), about
    240 bytes as JSON: the same shape the wrk scripts send."""
    return enrich(
        {
            "userId": f"user-{i % users}",
            "eventType": EVENT_TYPES[i % len(EVENT_TYPES)],
            "payload": {"productId": f"sku-{i}", "price": 19.99, "currency": "EUR"},
        }
    )


def bench_producer(bootstrap: str, **overrides: Any) -> Producer:
    """A producer configured as producer_service's publisher is by default (acks=all,
    idempotent, lz4, linger 5 ms), so baselines compare like with like."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            **overrides,
        }
    )


def produce_or_wait(producer: Producer, topic: str, record: Mapping[str, Any]) -> None:
    while True:
        try:
            producer.produce(
                topic,
                key=str(record["userId"]).encode(),
                value=compact_json(record),
                headers=list(record_headers(record)),
            )
            return
        except BufferError:
            producer.poll(0.05)


@dataclass(frozen=True)
class Fill:
    records: int
    unique: int
    duplicates: int
    seconds: float
    bytes_per_record: float
    # A held fill's: makes its records readable (commits its transaction). None when the
    # records were readable as they came.
    release: Callable[[], None] | None = field(default=None, repr=False, compare=False)


def fill_topic(
    bootstrap: str,
    topic: str,
    n: int,
    duplicate_share: float,
    *,
    held: bool = False,
    seal: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Fill:
    """Publish `n` records of which `duplicate_share` are copies of an earlier record (the
    same eventId and body, re-published: new offsets, so the consumer sees a duplicate
    event, not a redelivery). A copy has its original's key, so it lands on the same
    partition, a few records later.

    `held`: the records go in one Kafka transaction left open, so a read_committed reader
    (librdkafka's default, and so the worker's) sees none of them until `Fill.release()`
    commits it, and then all at once: consumers can join their group first and find the
    whole topic waiting. Release it within 5 minutes (the transaction's timeout).

    `seal`: turns each new record into the one published (its payload encrypted, as the
    producer does with PAYLOAD_ENCRYPTION_KEYS; see `sealer`)."""
    settings: dict[str, Any] = {"linger.ms": 20, "batch.size": 1_000_000}
    if held:
        settings |= {"transactional.id": f"bench-fill-{topic}", "transaction.timeout.ms": 300_000}
    producer = bench_producer(bootstrap, **settings)
    if held:
        producer.init_transactions(30)
        producer.begin_transaction()
    every = round(1 / duplicate_share) if duplicate_share > 0 else 0
    recent: list[dict[str, Any]] = []
    duplicates = 0
    size = 0
    started = time.monotonic()
    for i in range(n):
        if every and i % every == every - 1 and recent:
            record = recent[0]
            duplicates += 1
        else:
            record = pipeline_record(i) if seal is None else seal(pipeline_record(i))
            recent.append(record)
            if len(recent) > 16:
                recent.pop(0)
        size += len(compact_json(record))
        produce_or_wait(producer, topic, record)
        if i % 10_000 == 0:
            producer.poll(0)
        if i and i % 200_000 == 0:
            progress(f"  filled {i:,} of {n:,}")
    if producer.flush(120) != 0:
        raise SystemExit(f"filling {topic}: not every record was acknowledged")
    seconds = time.monotonic() - started
    if not held:
        return Fill(n, n - duplicates, duplicates, seconds, size / max(n, 1))

    def release() -> None:
        producer.commit_transaction(60)

    return Fill(n, n - duplicates, duplicates, seconds, size / max(n, 1), release)


def encryption_env(prefix: str) -> dict[str, str]:
    """The variables turning payload encryption on, with a fresh master key, for services
    whose data keys live under the store prefix `prefix`."""
    key = base64.b64encode(os.urandom(32)).decode()
    return {"PAYLOAD_ENCRYPTION_KEYS": f"bench:{key}", "PRODUCER_REDIS_PREFIX": prefix}


def sealer(
    store: BenchRedis, prefix: str, env: Mapping[str, str]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A `fill_topic` seal: each record's payload encrypted as the producer with `env`
    (`encryption_env`) would, its users' data keys stored under `prefix` in `store`."""
    keys = DataKeys(
        store.client,
        parse_master_keys(env["PAYLOAD_ENCRYPTION_KEYS"]),
        functools.partial(data_key, prefix),
        data_key_erasures(prefix),
    )

    def seal_one(record: dict[str, Any]) -> dict[str, Any]:
        user = record["userId"]
        key = keys.for_writing((user,))[user]
        envelope = seal(key, user, record["eventId"], compact_json(record["payload"]))
        return {**record, "payload": envelope}

    return seal_one


# -- figures ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of `values` (need not be sorted); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def last_json_line(output: str, marker: str = "") -> dict[str, Any]:
    """The last line of `output` that starts with `marker` and holds a JSON object."""
    for line in reversed(output.splitlines()):
        if line.startswith(marker) and "{" in line:
            value: dict[str, Any] = json.loads(line[line.index("{") :])
            return value
    raise ValueError(f"no JSON line{' after ' + marker if marker else ''} in:\n{output[-2000:]}")


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

"""`consumer-service` / `python -m consumer_service`: one replica of the consumer.

The main process runs the Kafka worker; the read API runs under gunicorn as a child
process on CONSUMER_PORT. Both stop together:

* SIGTERM or SIGINT: the signal thread only sets a flag. The worker finishes its batch, commits,
  closes its consumer (leaving the group at once); then the API child gets SIGTERM, and
  the process exits 0.
* A second SIGINT exits at once with status 1 (for a stuck shutdown at a terminal).
* The API child dying on its own stops the worker too (exit 1), so the orchestrator
  restarts a whole replica rather than keep one that cannot be inspected.

Worker metrics reach the API's /metrics through prometheus_client's multiprocess mode:
PROMETHEUS_MULTIPROC_DIR is set here, before prometheus_client is imported.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from consumer_service.config import ConsumerSettings
from shared.config import redacted
from shared.errors import ConfigError, Unavailable
from shared.logs import configure_logging

if TYPE_CHECKING:
    from consumer_service.pipeline.worker import Worker
    from consumer_service.storage import EventStore

log = logging.getLogger("consumer_service")

EXIT_CONFIG = 2
PR_SET_PDEATHSIG = 1


def _prepare_run_dir() -> tuple[Path, bool]:
    """The shared directory for metrics files and the worker heartbeat; True when we made
    it (and so remove it at exit)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        # Files of a previous run would add its counts to ours.
        for old in path.glob("*.db"):
            old.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="consumer-service-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path, True


def _die_with_parent() -> None:
    # Linux: the API child gets SIGTERM if this process dies, even by SIGKILL, so a
    # crashed replica never leaves an orphan holding the port.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _start_api() -> subprocess.Popen[bytes]:
    conf = Path(__file__).with_name("gunicorn.conf.py")
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(conf)],
        # Its own session: a terminal's Ctrl-C reaches only this process, which stops the
        # worker first and then the API, in that order.
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def ensure_dlq(settings: ConsumerSettings, worker: Worker) -> bool:
    """Make sure the DLQ topic exists before the first poison record needs it, retrying
    with backoff while Kafka does not answer (the worker reports "backing_off"). False
    when a stop was requested first. Raises KafkaAuthenticationFailed when the broker
    refuses the credentials: no retry can fix that."""
    from consumer_service.pipeline.processing import backoff_delay
    from consumer_service.topics import ensure_dlq_topic

    common = settings.common
    attempt = 0
    while not worker.stopping:
        try:
            ensure_dlq_topic(
                common,
                common.kafka_topic,
                settings.dlq_topic,
                common.kafka_topic_partitions,
            )
            return True
        except Unavailable as exc:
            delay = backoff_delay(
                attempt, settings.backoff_initial_seconds, settings.backoff_max_seconds
            )
            log.warning(
                "cannot reach Kafka to check the DLQ topic, retrying",
                extra={"error": str(exc), "retry_in_s": delay},
            )
            worker.set_state("backing_off", str(exc))
            _sleep_unless(worker, delay)
            attempt += 1
    worker.set_state("stopped", "stopped before Kafka answered")
    return False


def _sleep_unless(worker: Worker, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not worker.stopping and time.monotonic() < deadline:
        time.sleep(0.05)


def _start_signal_thread(worker: Worker, api: subprocess.Popen[bytes] | None) -> None:
    """Take SIGINT and SIGTERM on a thread of their own: the first one asks the worker to
    stop, a second SIGINT exits at once (status 1), the API child with it.

    With sigwait(), not a handler on the main thread: the main thread spends its time
    inside librdkafka calls that do not return to Python for up to the poll timeout (or
    far longer in a stuck close()), and a second Ctrl-C must work even then. Call it only
    after the API child started, so the child does not inherit the blocked mask."""
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    def take_signals() -> None:
        while True:
            signum = signal.sigwait(stop_signals)
            if signum == signal.SIGINT and worker.stopping:
                os.write(2, b'{"level": "ERROR", "message": "second interrupt: exiting now"}\n')
                if api is not None:
                    os.kill(api.pid, signal.SIGTERM)
                os._exit(1)
            # The first one only sets the flag: the batch in hand is finished and committed.
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            worker.request_stop()

    threading.Thread(target=take_signals, name="signals", daemon=True).start()


def _watch_api(api: subprocess.Popen[bytes], worker: Worker) -> threading.Event:
    """Stop the worker when the API child exits on its own; the returned event is set
    then (the replica exits 1 rather than keep a worker that cannot be inspected)."""
    api_died = threading.Event()

    def watch() -> None:
        status = api.wait()
        if not worker.stopping:
            log.error("the read API exited; stopping the worker", extra={"exit_code": status})
            api_died.set()
            worker.request_stop()

    threading.Thread(target=watch, name="api-watch", daemon=True).start()
    return api_died


def _stop_api(api: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the API child unless it is gone; SIGKILL after 10 s."""
    if api.poll() is None:
        api.terminate()
        try:
            api.wait(timeout=10)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()


def _serve(settings: ConsumerSettings, store: EventStore, status_path: Path) -> int:
    """Run the worker (and the API child) until stopped; the exit code."""
    # Imported only now: prometheus_client picks its multiprocess mode at import.
    from consumer_service.pipeline.dlq import KafkaDeadLetterQueue
    from consumer_service.pipeline.status import StatusFile
    from consumer_service.pipeline.worker import EXIT_FATAL, EXIT_OK, Worker

    dlq = KafkaDeadLetterQueue(
        settings.common,
        settings.dlq_topic,
        settings.consumer_group,
        settings.dlq_flush_timeout_seconds,
    )
    worker = Worker(settings, store, dlq, status_file=StatusFile(status_path))
    api = _start_api() if settings.api_enabled else None
    _start_signal_thread(worker, api)
    api_died = _watch_api(api, worker) if api is not None else None
    try:
        code = worker.run() if ensure_dlq(settings, worker) else EXIT_OK
    except ConfigError as exc:  # KafkaAuthenticationFailed
        log.error("cannot start: Kafka refused this client", extra={"error": str(exc)})
        worker.set_state("failed", str(exc))
        dlq.close()
        code = EXIT_CONFIG
    if api is not None:
        _stop_api(api)
    if api_died is not None and api_died.is_set() and code == EXIT_OK:
        code = EXIT_FATAL
    return code


def main() -> int:
    try:
        settings = ConsumerSettings.from_env()
    except ConfigError as exc:
        error = {"error": {"type": "config_error", "message": str(exc)}}
        print(json.dumps(error), file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.common.log_level, service="consumer")
    run_dir, made_run_dir = _prepare_run_dir()
    status_path = run_dir / "worker-status.json"
    os.environ["CONSUMER_STATUS_FILE"] = str(status_path)

    # Imported only now: prometheus_client picks its multiprocess mode at import.
    from consumer_service.storage import check_durability, open_store

    log.info("consumer starting", extra={"settings": redacted(settings), "pid": os.getpid()})
    store = open_store(settings, timeout_seconds=settings.redis_timeout_seconds, writer=True)
    durable = check_durability(store, settings.require_durable_redis)
    if durable and settings.encryption.enabled:
        from consumer_service.pipeline.shredding import self_check

        durable = self_check(settings)
    code = _serve(settings, store, status_path) if durable else EXIT_CONFIG
    store.close()
    if made_run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    if durable:
        log.info("consumer exited", extra={"exit_code": code})
    return code


if __name__ == "__main__":
    sys.exit(main())

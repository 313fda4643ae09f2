"""Gunicorn configuration of the producer, read from the same environment as the app.

    gunicorn -c producer_service/gunicorn.conf.py 'producer_service:create_app()'

Worker model: `PRODUCER_WORKER_CLASS`, `gthread` by default. The concurrent requests of a
worker (threads, or greenlets under `gevent`) share its one Kafka producer, so they fill
the same `linger.ms` batches; see docs/producer.md for the measurements behind the
choice. The app is not preloaded: each worker builds its own
after the fork, and with it its own librdkafka client (librdkafka is not fork-safe).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from producer_service.config import ProducerSettings
from shared.config import redacted
from shared.logs import configure_logging, gunicorn_logger_class

_settings = ProducerSettings.from_env()

bind = [f"{_settings.bind_host}:{_settings.port}"]
workers = _settings.workers
worker_class = _settings.worker_class
threads = _settings.threads
# In-flight requests may wait for an ack, then the worker flushes: both must fit.
graceful_timeout = int(_settings.ack_timeout + _settings.flush_timeout) + 5
timeout = max(30, graceful_timeout)
keepalive = 5
# One JSON line per request comes from the app; gunicorn's access log would duplicate it.
accesslog = None
errorlog = "-"
proc_name = "producer-service"
logger_class = gunicorn_logger_class(_settings.common.log_level, service="producer")
# gunicorn 27's control socket sits at one path per user; two instances on one host (tests,
# benchmarks) would fight over it and nothing here uses it.
control_socket_disable = True

# Metrics of all workers are aggregated through files; the directory must exist before
# any worker imports prometheus_client, so it is chosen here, in the master, at load.
_owned_metrics_dir: str | None = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _owned_metrics_dir = tempfile.mkdtemp(prefix="producer-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _owned_metrics_dir

_log = logging.getLogger("producer_service.gunicorn")


def on_starting(server: Any) -> None:
    _log.info("starting", extra={"settings": redacted(_settings)})


def post_fork(server: Any, worker: Any) -> None:
    configure_logging(_settings.common.log_level, service="producer")


def post_worker_init(worker: Any) -> None:
    """Start the worker's Kafka client before the first request, so that request does not
    pay for the connection and the idempotent-producer handshake. Bounded to 1 s."""
    from producer_service.app import publisher_of

    publisher_of(worker.wsgi).ready(1.0)


def worker_exit(server: Any, worker: Any) -> None:
    """Runs in the worker after its last request: deliver what is still queued (bounded)."""
    app = getattr(worker, "wsgi", None)
    if app is None or not hasattr(app, "extensions"):
        return
    from producer_service.app import publisher_of

    publisher_of(app).close(_settings.flush_timeout)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _owned_metrics_dir is not None:
        shutil.rmtree(_owned_metrics_dir, ignore_errors=True)

"""Gunicorn configuration of the producer, read from the same environment as the app.

    gunicorn -c producer_service/gunicorn.conf.py 'producer_service:create_app()'

Worker model: `PRODUCER_WORKER_CLASS`, `gevent` by default. The concurrent requests of a
worker (threads, or greenlets under `gevent`) share its one Kafka producer, so they fill
the same `linger.ms` batches; see docs/producer.md for the measurements behind the
choice. The app is not preloaded: each worker builds its own
after the fork, and with it its own librdkafka client (librdkafka is not fork-safe).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from producer_service.config import ProducerSettings
from shared.auth import warn_if_open
from shared.config import redacted
from shared.urls import bind_address
from shared.web import GunicornHooks

_settings = ProducerSettings.from_env()
# Metrics of all workers are aggregated through files; the directory must exist before
# any worker imports prometheus_client, so it is chosen here, in the master, at load.
_hooks = GunicornHooks.start("producer", _settings.common.log_level)

bind = [bind_address(_settings.bind_host, _settings.port)]
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
logger_class = _hooks.logger_class
# gunicorn 27's control socket sits at one path per user; two instances on one host (tests,
# benchmarks) would fight over it and nothing here uses it.
control_socket_disable = True

post_fork = _hooks.post_fork
child_exit = _hooks.child_exit
on_exit = _hooks.on_exit

_log = logging.getLogger("producer_service.gunicorn")


def on_starting(server: Any) -> None:
    _log.info("starting", extra={"settings": redacted(_settings)})
    s = _settings
    warn_if_open(_log, "producer", s.bind_host, s.port, s.auth_enabled)


def post_worker_init(worker: Any) -> None:
    """Start the worker's Kafka client before the first request, so that request does not
    pay for the connection and the idempotent-producer handshake. Bounded to 1 s.

    Then move everything allocated so far (modules, Flask, marshmallow, the app) out of
    the garbage collector's sight: a request allocates thousands of short-lived objects,
    and each full collection they trigger walked all of those long-lived ones again. In
    a profile of `/events/batch` the collector took ~15 % of a worker's time."""
    from producer_service import metrics
    from producer_service.app import publisher_of

    publisher_of(worker.wsgi).ready(1.0)
    metrics.start_flusher()
    gc.collect()
    gc.freeze()


def worker_exit(server: Any, worker: Any) -> None:
    """Runs in the worker after its last request: deliver what is still queued (bounded),
    then publish the worker's last counts."""
    app = getattr(worker, "wsgi", None)
    if app is None or not hasattr(app, "extensions"):
        return
    from producer_service import metrics
    from producer_service.app import publisher_of

    publisher_of(app).close(_settings.flush_timeout)
    metrics.flush()

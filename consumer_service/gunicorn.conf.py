"""gunicorn settings of the read API that `consumer-service` starts next to its worker.

Settings come from the same validated ConsumerSettings as the worker's.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess

from consumer_service.config import ConsumerSettings
from shared.logs import gunicorn_logger_class

_settings = ConsumerSettings.from_env()

wsgi_app = "consumer_service.api:create_app()"
bind = f"0.0.0.0:{_settings.port}"
workers = _settings.api_workers
worker_class = "gthread"
threads = 4
# Short: the API only reads Redis, and the whole replica must stop inside the
# orchestrator's grace period together with the worker.
graceful_timeout = 5
timeout = 30
accesslog = None
# gunicorn 27's control socket lives at one path per user; replicas sharing a host (or
# the producer's gunicorn) would fight over it, and nothing here uses it.
control_socket_disable = True


logger_class = gunicorn_logger_class(_settings.common.log_level, service="consumer-api")


def child_exit(server: Any, worker: Any) -> None:
    # Drops the dead API worker's live gauges from the multiprocess directory.
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

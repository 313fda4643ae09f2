"""gunicorn settings of the read API that `consumer-service` starts next to its worker.

Settings come from the same validated ConsumerSettings as the worker's.
"""

from __future__ import annotations

import logging
from typing import Any

from consumer_service.config import ConsumerSettings
from shared.auth import warn_if_open
from shared.urls import bind_address
from shared.web import GunicornHooks

_settings = ConsumerSettings.from_env()
# `consumer-service` gives the directory its worker writes metrics to; run on its own,
# the API makes one so that /metrics adds up its workers.
_hooks = GunicornHooks.start("consumer-api", _settings.common.log_level)

wsgi_app = "consumer_service.api.app:create_app()"
bind = bind_address(_settings.api.bind_host, _settings.port)
workers = _settings.api.workers
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
logger_class = _hooks.logger_class
post_fork = _hooks.post_fork
child_exit = _hooks.child_exit
on_exit = _hooks.on_exit

_log = logging.getLogger("consumer_service.gunicorn")


def on_starting(server: Any) -> None:
    warn_if_open(_log, "consumer", _settings.api.bind_host, _settings.port, _settings.auth_enabled)

"""PRODUCER_RATE_LIMIT: a quota of events per credential (an API key, or a JWT's `sub`;
per client address when the producer is open), enforced with Flask-Limiter.

What is counted: every request to `/events` that passed the credential check, one unit for
`/events/generate` and one per event for `/events/batch` (so splitting a batch neither
gains nor loses quota). Both routes draw on one quota. A request over the quota is
refused with 429 before anything is validated or published, and costs nothing.

The counters use the sliding-window-counter strategy: each check is one atomic Redis
script that refuses without counting, and a client cannot send twice the limit across
the edge of a fixed window.

Where the counters live:

* `REDIS_URL` set: in Redis under `PRODUCER_RATE_LIMIT_PREFIX`, so the quota holds across
  gunicorn workers and producer processes.
* `REDIS_URL` unset: in each worker process's memory. The quota is then per process: with
  2 workers and 3 replicas a client may get 6 times the limit.

When Redis does not answer (`REDIS_TIMEOUT` per call), the limiter logs a warning and
falls back to per-process memory counters, probing Redis again after growing pauses (1,
2, 4 ... 32 s, then from 1 s again). It fails open to a looser limit rather than closed:
the quota protects capacity and fairness, not data, and Redis is otherwise no part of the
producer's path, so an outage of it must not stop the intake of events that Kafka could
still take.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from flask import Flask, Response, g, request
from flask_limiter import Limiter, RateLimitExceeded

from producer_service.config import ProducerSettings
from producer_service.errors import error_response
from shared import web

logger = logging.getLogger(__name__)

# Seconds one Redis call of the limiter may take before it counts as down: a local Redis
# answers in well under a millisecond, and every request waits for this call.
REDIS_TIMEOUT = 0.5
# The one quota every publishing route draws on: /events and the tracking API's /v1.
SCOPE = "events"
# The blueprints whose requests spend quota: /events and the tracking API's /v1.
CHARGED_BLUEPRINTS = frozenset(("events", "tracking"))
# Where `charge` leaves the request's cost for `Quota._cost`.
COST = "producer_quota_cost"


def _storage_uri(redis_url: str | None) -> str:
    if redis_url is None:
        return "memory://"
    # The limits library names a Unix socket redis+unix://; redis-py and REDIS_URL unix://.
    if redis_url.lower().startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://") :]
    return redis_url


def _charged() -> None:
    """Stands for the work a quota unit pays for; Flask-Limiter checks the limit on each
    call of the wrapper `Limiter.shared_limit` builds around it."""


class Quota:
    """The rate limit of one app. `charge` is called by the `/events` views after the
    credential check; it raises `RateLimitExceeded`, answered 429 by the handler registered
    here, when the request's cost does not fit in the client's quota."""

    def __init__(self, app: Flask, settings: ProducerSettings) -> None:
        self._keyed = settings.auth_enabled
        redis_url = settings.rate_limit_redis_url
        options: dict[str, str | int | float] = {}
        if redis_url is not None:
            options = {
                "key_prefix": settings.rate_limit_prefix,
                "socket_timeout": REDIS_TIMEOUT,
                "socket_connect_timeout": REDIS_TIMEOUT,
            }
        self.limiter = Limiter(
            self._client,
            app=app,
            storage_uri=_storage_uri(redis_url),
            storage_options=options,  # type: ignore[arg-type]  # floats are fine for redis-py
            strategy="sliding-window-counter",
            # Redis down: count in memory meanwhile (see the module docstring); and should
            # the limiter fail in some other way, let the request through with the error logged.
            in_memory_fallback_enabled=True,
            swallow_errors=True,
            # X-RateLimit-* on every answer would cost a second storage call per request.
            headers_enabled=False,
        )
        # Only /events spends quota; /health, /ready and /metrics must not wait on Redis.
        self.limiter.request_filter(lambda: request.blueprint not in CHARGED_BLUEPRINTS)
        self._check = self.limiter.shared_limit(settings.rate_limit, scope=SCOPE, cost=self._cost)(
            _charged
        )
        app.register_error_handler(RateLimitExceeded, self._refuse)

    def charge(self, events: int = 1) -> None:
        """Take `events` units (at least 1) from the client's quota, or raise
        `RateLimitExceeded` and take nothing. Blocks for at most one Redis call."""
        setattr(g, COST, max(1, events))
        self._check()

    def _client(self) -> str:
        """Whom the quota belongs to: the credential the request was let in with (an API
        key by its hash, so the counters' names in Redis give no key away; a JWT by its
        `sub`), else the client's address."""
        let_in = web.principal()
        if let_in is not None:
            return let_in.subject
        return "addr:" + (request.remote_addr or "unknown")

    @staticmethod
    def _cost() -> int:
        cost: int = getattr(g, COST, 1)
        return cost

    def _refuse(self, exc: RateLimitExceeded) -> Response:
        # Flask-Limiter has logged the refusal (INFO, logger "flask-limiter").
        retry_after = self._retry_after()
        cost = self._cost()
        limit = exc.limit.limit
        whose = "per credential" if self._keyed else "per client address"
        message = (
            f"Over the rate limit of {limit} {whose}; this request would take {cost} (one "
            f"per event). Nothing was published. Retry in {retry_after} s."
        )
        if cost > limit.amount:
            message = (
                f"This batch of {cost} events is larger than the whole rate limit of {limit} "
                f"{whose}, so it can never pass; send it in smaller batches. Nothing was "
                "published."
            )
        return error_response(
            429, "rate_limited", message, headers={"Retry-After": str(retry_after)}
        )

    def _retry_after(self) -> int:
        """Whole seconds (at least 1) until the breached limit should free a unit, as
        Flask-Limiter estimates it."""
        breached = self.limiter.current_limit
        if breached is None:
            return 1
        try:
            reset_at = breached.reset_at
        except Exception:  # a storage that failed between the check and this look-up
            logger.warning("rate limit reset time unavailable", exc_info=True)
            return 1
        return max(1, math.ceil(reset_at - time.time()))


def quota_responses(settings: ProducerSettings) -> dict[str, Any]:
    """The OpenAPI answers the quota adds to each publishing route (/events, /v1): a 429,
    when there is a limit (a document for an unlimited service promises none)."""
    if not settings.rate_limits:
        return {}
    whose = "credential (API key, or JWT `sub`)" if settings.auth_enabled else "client address"
    return {
        "429": {
            "description": (
                f"Over PRODUCER_RATE_LIMIT ({settings.rate_limit} per {whose}; a batch "
                "counts one per event or message; /events and /v1 share the quota). `type` is "
                "`rate_limited`. Nothing was published; retry after `Retry-After` seconds."
            ),
            "headers": {
                "Retry-After": {
                    "description": "Seconds until the quota frees a unit.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    }

"""The floor of single-event intake: an empty Flask view under the producer's own gunicorn.

    python -m bench.floor      # listens where PRODUCER_BIND_HOST / PRODUCER_PORT say

The same configuration file as `producer-service` (workers, worker class, keep-alive,
logging hooks, `gc.freeze` after start), the same interpreter and the same Flask, with a
view that reads the body and answers 201 with nothing else. What `producer-service`
spends per request beyond this is our own work; `make bench` reports the ratio.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from flask import Flask, Response, request
from gunicorn.app.base import Application

from producer_service.__main__ import CONFIG_FILE


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/events/generate")
    def generate() -> tuple[str, int]:
        request.get_data()
        return "", 201

    @app.get("/ready")
    def ready() -> Response:
        return Response(b'{"status":"ready"}', mimetype="application/json")

    return app


def _post_worker_init(worker: Any) -> None:
    # The producer's hook starts its Kafka client, then freezes the heap; only the latter
    # applies to an app without one.
    gc.collect()
    gc.freeze()


def _worker_exit(server: Any, worker: Any) -> None:
    return None


class FloorApplication(Application):  # type: ignore[misc]
    def init(self, parser: Any, opts: Any, args: Any) -> None:
        return None

    def load_config(self) -> None:
        self.load_config_from_file(str(CONFIG_FILE))
        self.cfg.set("proc_name", "intake-floor")
        self.cfg.set("post_worker_init", _post_worker_init)
        self.cfg.set("worker_exit", _worker_exit)

    def load(self) -> Any:
        return create_app()


def main() -> int:
    FloorApplication(usage="python -m bench.floor", prog="intake-floor").run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

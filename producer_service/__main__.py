"""`producer-service`: run the producer API under gunicorn with producer_service/gunicorn.conf.py.

Settings are validated first, so a bad environment variable stops the process with a
message naming it (exit 2) instead of failing in every worker.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gunicorn.app.base import Application

from producer_service.config import ProducerSettings
from producer_service.encryption import self_check
from shared.errors import ConfigError

CONFIG_FILE = Path(__file__).with_name("gunicorn.conf.py")


class ProducerApplication(Application):  # type: ignore[misc]
    """Gunicorn with our config file and no command-line parsing of its own."""

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        return None

    def load_config(self) -> None:
        self.load_config_from_file(str(CONFIG_FILE))

    def load(self) -> Any:
        # Runs in each worker after the fork (the app is not preloaded).
        from producer_service.app import create_app

        return create_app()


def main() -> int:
    try:
        settings = ProducerSettings.from_env()
    except ConfigError as exc:
        print(f"producer-service: {exc}", file=sys.stderr)
        return 2
    problem = self_check(settings)
    if problem is not None:
        print(f"producer-service: {problem}", file=sys.stderr)
        return 2
    ProducerApplication(usage="producer-service", prog="producer-service").run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

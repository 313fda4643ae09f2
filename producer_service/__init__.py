"""The producer service: an HTTP API that validates user-activity events and publishes them
to Kafka, answering only once Kafka has acknowledged them.

    gunicorn -c producer_service/gunicorn.conf.py 'producer_service:create_app()'

or simply `producer-service`, which does the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producer_service.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported lazily: the app pulls in prometheus_client, which fixes its multiprocess
    # mode at import time, and gunicorn.conf.py (importing producer_service.config) must
    # get to set PROMETHEUS_MULTIPROC_DIR first.
    if name == "create_app":
        from producer_service.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The consumer's read API: the Flask app (`app`), the read views (`events`), their shapes
(`schemas`), the OpenAPI document (`openapi`), and the live dashboard (`dashboard/`: views,
the Kafka view and the Redis reads).

`gunicorn 'consumer_service.api:create_app()'` serves it. The names below are imported on
first use, so that importing a submodule (the schemas, say) does not build the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer_service.api.app import create_app
    from consumer_service.api.openapi import build_spec

__all__ = ["build_spec", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from consumer_service.api.app import create_app

        return create_app
    if name == "build_spec":
        from consumer_service.api.openapi import build_spec

        return build_spec
    raise AttributeError(name)

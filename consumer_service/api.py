"""The read API's old entry point, kept so `consumer_service.api:create_app()` and the
tests' imports go on working; the factory lives in `consumer_service.app`, the views in
`consumer_service.events` and the document in `consumer_service.openapi`."""

from __future__ import annotations

from consumer_service.app import create_app
from consumer_service.openapi import build_spec

__all__ = ["build_spec", "create_app"]

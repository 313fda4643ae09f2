"""The pipeline's error hierarchy.

Two kinds of failure drive every decision in both services:

* `InvalidEvent`: the input itself is wrong. Retrying cannot help. The API answers 400,
  the consumer sends the record to the dead-letter topic and moves on.
* `Unavailable`: a dependency (Kafka, Redis) did not answer. The work is retried:
  the API answers 503, the consumer backs off without advancing its offsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PipelineError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(PipelineError):
    """A setting is missing or malformed; the process must not start."""


class InvalidEvent(PipelineError):
    """An event failed validation. `messages` maps field names to their problems."""

    def __init__(self, message: str, messages: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.messages: Mapping[str, Any] = messages or {}


class Unavailable(PipelineError):
    """Kafka or Redis could not do the work in time; the caller may retry."""

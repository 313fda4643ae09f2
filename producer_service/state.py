"""What the producer's views share: one `ProducerState` per app, built by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

from producer_service.config import ProducerSettings
from producer_service.publisher import EventPublisher
from producer_service.schemas import BatchInputSchema
from shared.events import EventInputSchema

if TYPE_CHECKING:
    from producer_service.quotas import Quota

# Where the app keeps its `ProducerState` (in `app.extensions`).
EXTENSION = "producer"


@dataclass(frozen=True)
class ProducerState:
    """What the views need, built once per app by `create_app`."""

    settings: ProducerSettings
    publisher: EventPublisher
    input_schema: EventInputSchema
    batch_schema: BatchInputSchema
    # PRODUCER_RATE_LIMIT's quota; None when there is no limit.
    quota: Quota | None = None


def install(app: Flask, producer_state: ProducerState) -> None:
    """Make `producer_state` the state of `app`'s requests."""
    app.extensions[EXTENSION] = producer_state


def state_of(app: Flask) -> ProducerState:
    """The state `install` gave `app`."""
    result: ProducerState = app.extensions[EXTENSION]
    return result


def state() -> ProducerState:
    """The state of the app handling the current request (needs an app context)."""
    result: ProducerState = current_app.extensions[EXTENSION]
    return result

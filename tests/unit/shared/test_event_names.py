"""EVENT_TYPES with `*`: free-text event names beside the listed ones."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from shared.config import CommonSettings
from shared.event_rules import EventTypes
from shared.events import EventInputSchema

FREE = EventTypes(("LOGIN", "*"))


@pytest.mark.parametrize(
    "name", ["LOGIN", "Order Completed", "Checkout Step 2: Payment", "a", "x" * 64, "A/B (test)"]
)
def test_free_names_are_admitted_with_a_star(name: str) -> None:
    assert name in FREE
    assert EventInputSchema(FREE).load({"userId": "u", "eventType": name})["eventType"] == name


@pytest.mark.parametrize(
    "name",
    ["*", "", " lead", "trail ", "two  spaces", "x" * 65, "tab\there", "<b>", 'say "hi"', "é"],
)
def test_other_names_are_refused(name: str) -> None:
    assert name not in FREE
    with pytest.raises(ValidationError):
        EventInputSchema(FREE).load({"userId": "u", "eventType": name})


def test_without_a_star_only_listed_names_pass() -> None:
    strict = EventTypes(("LOGIN",))
    assert "LOGIN" in strict
    assert "Order Completed" not in strict
    with pytest.raises(ValidationError):
        EventInputSchema(strict).load({"userId": "u", "eventType": "Order Completed"})


def test_fast_and_marshmallow_paths_agree_on_free_names() -> None:
    schema = EventInputSchema(FREE)
    for name in ("Order Completed", "two  spaces", "x" * 65):
        fast = schema.load_fast({"userId": "u", "eventType": name})
        try:
            slow = schema.load({"userId": "u", "eventType": name})
        except ValidationError:
            slow = None
        assert (fast[0] if fast else None) == slow


def test_the_setting_accepts_a_star() -> None:
    assert "*" in CommonSettings(event_types=("LOGIN", "*")).event_types

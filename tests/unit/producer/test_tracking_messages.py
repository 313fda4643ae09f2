"""The tracking API's message rules: the fast path agrees with MessageSchema, and each
kind maps as documented."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from producer_service.tracking_messages import (
    IGNORED,
    InvalidMessage,
    TrackingRules,
    check_sizes,
    fast_load,
    message_event,
)
from shared.events import message_event_id

KIND_TYPES = {
    "page": "PAGE_VIEW",
    "screen": "SCREEN_VIEW",
    "identify": "",
    "group": "GROUP",
    "alias": "ALIAS",
}
RULES = TrackingRules.of(("LOGIN", "PAGE_VIEW", "GROUP", "*"), KIND_TYPES, 200)

texts = st.one_of(
    st.none(),
    st.sampled_from(["", "u", "a\nb", "\u202e", "x" * 129, "x" * 300, "Order Completed"]),
    st.text(max_size=5),
    st.integers(),
)
objects = st.one_of(st.none(), st.just({}), st.just({"a": 1}), st.just([1]), st.just("s"))
messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "page", "identify", "alias", "bogus", None, 1]),
        "event": texts,
        "messageId": texts,
        "userId": texts,
        "anonymousId": texts,
        "name": texts,
        "timestamp": texts,
        "originalTimestamp": texts,
        "groupId": texts,
        "previousId": texts,
        "properties": objects,
        "traits": objects,
        "context": objects,
        "integrations": objects,
    },
)


@settings(max_examples=500, derandomize=True, database=None)
@given(message=messages, kind=st.sampled_from([None, "track", "page"]))
def test_the_fast_path_loads_what_the_schema_loads(
    message: dict[str, Any], kind: str | None
) -> None:
    fast = fast_load(message, RULES, kind)
    if fast is None:
        return
    given_ = {k: v for k, v in message.items() if v is not None}
    given_.setdefault("type", kind)
    assert RULES.schema.load(given_) == fast


def test_the_fast_path_takes_an_sdk_track_message() -> None:
    message = {
        "type": "track",
        "messageId": "m",
        "userId": "u",
        "anonymousId": None,
        "event": "Order Completed",
        "properties": {"a": 1},
        "context": {"library": {"name": "x"}},
        "integrations": {},
    }
    assert fast_load(message, RULES, None) is not None


@pytest.mark.parametrize(
    ("message", "event_type", "payload"),
    [
        (
            {"type": "track", "userId": "u", "event": "LOGIN", "properties": {"a": 1}},
            "LOGIN",
            {"a": 1},
        ),
        ({"type": "page", "anonymousId": "a", "name": "Home"}, "PAGE_VIEW", {"name": "Home"}),
        ({"type": "group", "userId": "u", "groupId": "g"}, "GROUP", {"groupId": "g", "traits": {}}),
        ({"type": "alias", "userId": "u", "previousId": "p"}, "ALIAS", {"previousId": "p"}),
    ],
)
def test_each_kind_maps_as_documented(
    message: dict[str, Any], event_type: str, payload: dict[str, Any]
) -> None:
    event = message_event(message, RULES)
    assert event["eventType"] == event_type
    assert event["payload"] == payload
    assert event["source"] == "segment-api"


def test_a_kind_mapped_to_no_admitted_type_is_ignored() -> None:
    assert message_event({"type": "identify", "userId": "u"}, RULES) is IGNORED


@pytest.mark.parametrize(
    "message",
    [
        {"type": "track", "event": "LOGIN"},
        {"type": "track", "userId": "u"},
        {"type": "track", "userId": "u", "event": "two  spaces"},
        {"type": "alias", "userId": "u"},
        {"type": "nope", "userId": "u"},
        [1],
    ],
)
def test_invalid_messages_raise(message: Any) -> None:
    with pytest.raises(InvalidMessage):
        message_event(message, RULES)


def test_payload_and_context_are_bounded() -> None:
    event = message_event(
        {"type": "track", "userId": "u", "event": "LOGIN", "context": {"x": "y" * 300}}, RULES
    )
    with pytest.raises(InvalidMessage) as info:
        check_sizes(event, 400, RULES)
    assert "context" in info.value.messages
    check_sizes(event, 150, RULES)  # a record within the bound needs no measuring


def test_message_ids_name_events_per_caller() -> None:
    assert message_event_id("k", "m") == message_event_id("k", "m")
    assert message_event_id("k", "m") != message_event_id("k2", "m")
    # The caller's length keeps ("ab", "c") and ("a", "bc") apart.
    assert message_event_id("ab", "c") != message_event_id("a", "bc")
    assert message_event_id("k", None) != message_event_id("k", None)


def test_schema_refuses_what_fast_path_refuses_to_decide() -> None:
    with pytest.raises(ValidationError):
        RULES.schema.load({"type": "track", "userId": "a\nb", "event": "LOGIN"})

"""The tracking API's message rules: the fast path agrees with the schema path, a batch's
context is merged into its messages, and each kind maps as documented."""

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
    fast_event,
    merged_context,
    message_event,
)
from shared.event_rules import USER_ID_FORBIDDEN
from shared.events import message_event_id, record_v2

KIND_TYPES = {
    "page": "PAGE_VIEW",
    "screen": "SCREEN_VIEW",
    "identify": "",
    "group": "GROUP",
    "alias": "ALIAS",
}
RULES = TrackingRules.of(("LOGIN", "PAGE_VIEW", "GROUP", "*"), KIND_TYPES, 200)

SDK_MESSAGE = {
    "type": "track",
    "messageId": "5f0c8e2a-1b7d-4c3e-9a6f-000000000001",
    "userId": "user-1",
    "anonymousId": None,
    "event": "Order Completed",
    "properties": {"productId": "sku-1", "price": 19.99},
    "timestamp": "2026-12-04T10:00:00.123456+00:00",
    "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    "integrations": {},
}


texts = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "u",
            "a\nb",
            "\u202e",
            "\x7f",
            "\u2028",
            # Not printable, yet allowed: a joiner (Cf) and a no-break space (Zs).
            "a\u200db",
            "\u00a0",
            "x" * 64,
            "x" * 65,
            "x" * 129,
            "x" * 300,
            "Order Completed",
            "LOGIN",
        ]
    ),
    st.text(max_size=5),
    st.integers(),
)
objects = st.one_of(
    st.none(),
    st.just({}),
    st.just({"a": 1}),
    st.just({"library": {"name": "own"}, "ip": "10.0.0.1"}),
    st.just([1]),
    st.just("s"),
)
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
MESSAGE_FIELDS = (
    *("type", "event", "messageId", "userId", "anonymousId", "name", "timestamp"),
    *("originalTimestamp", "groupId", "previousId", "properties", "traits", "context"),
)
# A valid track message with a few fields replaced: each rule is one change away, so the
# fast path's every check meets values on both sides of it.
near_valid = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from(
        [
            {"type": "track", "userId": "u", "event": "LOGIN"},
            {"anonymousId": "a", "event": "Order Completed", "messageId": "m"},
            {k: v for k, v in SDK_MESSAGE.items() if k != "type"},
            SDK_MESSAGE,
        ]
    ),
    st.dictionaries(
        st.sampled_from(MESSAGE_FIELDS),
        st.one_of(texts, objects),
        max_size=2,
    ),
)
batch_contexts = st.sampled_from(
    [None, {}, {"library": {"name": "batch"}}, {"library": "x", "locale": "fr-FR"}]
)


def schema_path(
    message: Any, kind: str | None, context: dict[str, Any] | None
) -> dict[str, Any] | str:
    """What the schema path makes of a message: its event, or "invalid" / "ignored"."""
    try:
        event = message_event(message, RULES, kind, context)
    except InvalidMessage:
        return "invalid"
    return "ignored" if event is IGNORED else event  # type: ignore[no-any-return]


@settings(max_examples=1500, derandomize=True, database=None)
@given(
    message=st.one_of(messages, near_valid, st.sampled_from([[1], "s", None])),
    kind=st.sampled_from([None, "track", "page"]),
    context=batch_contexts,
)
def test_the_fast_path_makes_the_records_the_schema_path_makes(
    message: Any, kind: str | None, context: dict[str, Any] | None
) -> None:
    fast = fast_event(message, RULES, kind, context)
    if fast is None:
        return
    # Never a refusal or an ignored message, and the same event, so the same record.
    slow = schema_path(message, kind, context)
    assert slow == fast
    assert isinstance(slow, dict)
    event_id = message_event_id("caller", "m")
    assert record_v2(event_id, fast, "t") == record_v2(event_id, slow, "t")


@pytest.mark.parametrize("context", [None, {"library": {"name": "batch"}, "locale": "fr-FR"}])
def test_the_fast_path_takes_an_sdk_track_message(context: dict[str, Any] | None) -> None:
    fast = fast_event(SDK_MESSAGE, RULES, None, context)
    assert fast is not None
    assert fast == schema_path(SDK_MESSAGE, None, context)
    # A name with a joiner, not printable yet allowed: the search decides, not the schema.
    assert fast_event({**SDK_MESSAGE, "userId": "a\u200db"}, RULES) is not None


def test_every_forbidden_character_is_unprintable() -> None:
    # fast_event takes isprintable() as proof that a text holds none of them.
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    forbidden = USER_ID_FORBIDDEN.findall(everything)
    assert len(forbidden) > 60
    assert not any(c.isprintable() for c in forbidden)


def test_a_message_context_is_the_batch_context_under_its_own_keys() -> None:
    batch = {"library": {"name": "batch"}, "locale": "fr-FR", "ip": "10.0.0.9"}
    own = {"library": {"name": "own"}, "page": {"path": "/"}}
    merged = merged_context(batch, own)
    # A shallow merge: the message's `library` replaces the batch's whole.
    assert merged == {
        "library": {"name": "own"},
        "locale": "fr-FR",
        "ip": "10.0.0.9",
        "page": {"path": "/"},
    }
    assert merged_context(batch, None) == batch
    assert merged_context(None, own) == own
    assert merged_context(None, None) is None
    assert merged_context({}, None) == {}
    # A new dict each time: no record shares a context object that could change under it.
    assert merged_context(batch, None) is not batch


@pytest.mark.parametrize("path", ["fast", "schema"])
def test_a_batch_context_is_merged_into_each_kind_of_message(path: str) -> None:
    batch = {"locale": "fr-FR", "library": {"name": "batch"}}
    track = {"type": "track", "userId": "u", "event": "LOGIN", "context": {"locale": "de"}}
    if path == "fast":
        event = fast_event(track, RULES, None, batch)
    else:
        event = message_event(track, RULES, None, batch)
    assert event is not None
    assert event["context"] == {"locale": "de", "library": {"name": "batch"}}
    page = message_event({"type": "page", "userId": "u", "name": "Home"}, RULES, None, batch)
    assert page["context"] == batch


def test_a_merged_context_over_the_bound_is_an_invalid_message() -> None:
    # Each context alone is within RULES' 200 bytes; merged they are not.
    batch = {"a": "x" * 120}
    message = {"type": "track", "userId": "u", "event": "LOGIN", "context": {"b": "y" * 120}}
    event = fast_event(message, RULES, None, batch)
    assert event is not None
    record = record_v2(message_event_id("k", None), event, "t")
    with pytest.raises(InvalidMessage) as info:
        check_sizes(event, 400, RULES)
    assert list(info.value.messages) == ["context"]
    assert record["context"] == {"a": "x" * 120, "b": "y" * 120}


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

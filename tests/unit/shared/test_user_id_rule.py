"""The userId character rule: no control characters (Cc), no line or paragraph separator
(Zl, Zp), no bidirectional formatting characters; every other character, the other
format characters (Cf) included, is allowed. One rule, in the shared schemas, for the
producer's input and the consumer's record alike."""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from shared.event_rules import USER_ID_FORBIDDEN, USER_ID_MAX, USER_ID_PATTERN, PlainText
from shared.events import EventInputSchema, EventRecordSchema
from tests.strategies import text_near_the_rule

# The bidirectional formatting characters: ALM, LRM, RLM, the embeddings and overrides
# LRE RLE PDF LRO RLO, and the isolates LRI RLI FSI PDI.
BIDI_FORMATTING = frozenset(
    [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)

PROPERTY = settings(max_examples=500, derandomize=True, database=None, deadline=None)

INPUT = EventInputSchema(("LOGIN",))
RECORD = EventRecordSchema()
RECORD_BASE = {
    "eventId": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
    "eventType": "LOGIN",
    "timestamp": "2026-11-24T04:29:53.123Z",
    "payload": {},
    "schemaVersion": 1,
}


def forbidden_by_definition(char: str) -> bool:
    return unicodedata.category(char) in {"Cc", "Zl", "Zp"} or ord(char) in BIDI_FORMATTING


def test_the_class_and_the_documented_pattern_are_the_rule_over_every_code_point() -> None:
    documented = re.compile(USER_ID_PATTERN).fullmatch
    wrong = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if not (
            (USER_ID_FORBIDDEN.search(chr(cp)) is not None)
            == forbidden_by_definition(chr(cp))
            == (documented(chr(cp)) is None)
        )
    ]
    assert wrong == []


@pytest.mark.parametrize(
    "char",
    ["\u200b", "\u200c", "\u200d", "\u00ad", "\ufeff", "\u2060", "\U000e0041", "\u0600"],
    ids=["ZWSP", "ZWNJ", "ZWJ", "SHY", "BOM", "WJ", "TAG A", "ARABIC NUMBER SIGN"],
)
def test_other_format_characters_are_allowed(char: str) -> None:
    assert unicodedata.category(char) == "Cf"
    user_id = f"a{char}b"
    assert INPUT.load({"userId": user_id, "eventType": "LOGIN"})["userId"] == user_id
    assert RECORD.load({**RECORD_BASE, "userId": user_id})["userId"] == user_id


def test_the_message_names_the_first_forbidden_character() -> None:
    with pytest.raises(ValidationError) as raised:
        PlainText()("ok\u202eback\nwards")
    assert raised.value.messages == [
        "Must not contain control or bidirectional formatting characters (found U+202E)."
    ]


def load_user_id(schema: Any, data: dict[str, Any]) -> str | dict[str, Any]:
    try:
        return str(schema.load(data)["userId"])
    except ValidationError as exc:
        return dict(exc.messages)


@PROPERTY
@given(user_id=st.one_of(text_near_the_rule, st.text(max_size=USER_ID_MAX + 2)))
@example(user_id="mallory\u202e\ngpj.exe")
@example(user_id="\u2066")
@example(user_id="\x85")
def test_both_schemas_accept_a_user_id_exactly_when_the_rule_does(user_id: str) -> None:
    expected = 1 <= len(user_id) <= USER_ID_MAX and not any(map(forbidden_by_definition, user_id))
    for schema, data in (
        (INPUT, {"userId": user_id, "eventType": "LOGIN"}),
        (RECORD, {**RECORD_BASE, "userId": user_id}),
    ):
        got = load_user_id(schema, data)
        if expected:
            assert got == user_id
        else:
            assert isinstance(got, dict) and set(got) == {"userId"}, got
    fast = INPUT.load_fast({"userId": user_id, "eventType": "LOGIN"})
    assert (fast is not None) == expected

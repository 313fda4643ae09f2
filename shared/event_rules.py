"""The rules single fields of an event follow, for every schema version and both services:
identity texts (userId, anonymousId: length and the characters nobody may slip into a log
line, a key or the dashboard), event type names (the EVENT_TYPES list, or free-text names
with `*`), timestamps and ids as patterns the OpenAPI documents show, and the payload's
size bound. `shared.events` builds the schemas from them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from marshmallow import ValidationError, fields, validate

from shared.json_codec import compact_json, json_problem

USER_ID_MAX = 128
EVENT_TYPE_MAX = 64
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024
# Version 2's client clock (kept as sent) and intake name.
ORIGINAL_TIMESTAMP_MAX = 64
SOURCE_MAX = 64

# ASCII digits only (`\d` would also take other scripts' digits, which break the string
# order the read API's time filters rely on). The patterns are also the OpenAPI documents'
# `pattern`s, so they stay valid ECMA regexes; Python checks them with `fullmatch`
# (FullRegexp), since a Python `$` also matches before a final newline.
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# Characters a userId may not hold. A userId is echoed into log lines, Kafka keys, Redis
# key names, DLQ headers and the dashboard, and is read by people there:
# * every control character (category Cc: C0, DEL, C1), e.g. a newline that forges a
#   log line or a NUL that truncates a key in some tools;
# * the line and paragraph separators U+2028/U+2029 (Zl, Zp), line breaks to many
#   viewers and to JavaScript;
# * the bidirectional formatting characters (U+061C, U+200E/F, U+202A-E, U+2066-9), which
#   reorder how the text around them is shown, so an id can read as another one.
# Other format characters (Cf) are allowed: zero-width joiners are needed to spell words
# in Persian or Hindi and to build emoji, tag characters build flags, and none of them
# breaks a line or reorders text. Cc is closed by Unicode's stability policy, so the class
# is exact for every Unicode version (tests/unit/shared/test_user_id_rule.py checks it).
_FORBIDDEN_CLASS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
USER_ID_FORBIDDEN = re.compile(f"[{_FORBIDDEN_CLASS}]")

# The same rule as the OpenAPI documents' `pattern` of userId (valid in ECMA regexes too),
# so that clients and fuzzers generating from the documents know it.
USER_ID_PATTERN = f"^[^{_FORBIDDEN_CLASS}]*$"

USER_ID_FORBIDDEN_MESSAGE = (
    "Must not contain control or bidirectional formatting characters (found {found})."
)
_user_id_forbidden = USER_ID_FORBIDDEN.search

# EVENT_TYPES may list `*`: then free-text event names, as analytics SDKs send them
# ("Order Completed"), are admitted besides the listed ones: 1-EVENT_TYPE_MAX ASCII
# letters, digits and `_ . : / & ' ( ) + , -`, in words joined by single spaces. Every
# name EVENT_TYPES may list is such a name. No control, markup or quote character but
# the apostrophe, so a name is as safe in a log line, a Redis key or the dashboard as a
# listed one. (Each word starts after exactly one space: the pattern cannot backtrack.)
FREE_EVENT_NAMES = "*"
_NAME_WORD = r"[A-Za-z0-9_.:/&'()+,-]+"
FREE_EVENT_NAME_PATTERN = f"^{_NAME_WORD}(?: {_NAME_WORD})*$"
_free_name = re.compile(FREE_EVENT_NAME_PATTERN).fullmatch


class EventTypes(frozenset[str]):
    """The eventType values a service admits: the names of EVENT_TYPES and, when it lists
    `*` (FREE_EVENT_NAMES), every free-text name (FREE_EVENT_NAME_PATTERN). `in` is the
    test; iterating yields the listed names, `*` among them."""

    @property
    def free(self) -> bool:
        return frozenset.__contains__(self, FREE_EVENT_NAMES)

    def __contains__(self, name: object) -> bool:
        if name == FREE_EVENT_NAMES:
            return False
        if frozenset.__contains__(self, name):
            return True
        return (
            type(name) is str
            and len(name) <= EVENT_TYPE_MAX
            and self.free
            and _free_name(name) is not None
        )


class PlainText(validate.Regexp):
    """Rejects text holding a character of USER_ID_FORBIDDEN, naming the first one. A
    `Regexp` (of USER_ID_PATTERN) for the OpenAPI documents' sake; the check itself is a
    search for the first forbidden character."""

    def __init__(self) -> None:
        super().__init__(USER_ID_PATTERN)

    def __call__(self, value: Any) -> Any:
        found = _user_id_forbidden(value)
        if found is not None:
            raise ValidationError(
                USER_ID_FORBIDDEN_MESSAGE.format(found=f"U+{ord(found.group()):04X}")
            )
        return value


class FullRegexp(validate.Regexp):
    """`validate.Regexp` that must match the whole value: "<uuid>\\n" is not a uuid.
    An eventId with a trailing newline would get a seen mark of its own, and so be stored
    twice beside the same event without it."""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class PayloadSize(validate.Validator):
    """Rejects a payload whose compact JSON encoding exceeds `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __call__(self, value: Any) -> Any:
        try:
            size = len(compact_json(value))
        except (ValueError, RecursionError):
            problem = json_problem(value)
            raise ValidationError(f"Payload cannot be stored as JSON: {problem}.") from None
        if size > self.max_bytes:
            raise ValidationError(f"Payload is {size} bytes; the limit is {self.max_bytes}.")
        return value


def event_type_rule(listed: Sequence[str]) -> validate.Validator:
    """The validator of an input eventType: one of the `listed` names (EVENT_TYPES), or
    with `*` among them any free-text name (a pattern the OpenAPI documents show)."""
    if FREE_EVENT_NAMES not in listed:
        return validate.OneOf(listed)
    return _FreeName()


class _FreeName(FullRegexp):
    def __init__(self) -> None:
        super().__init__(
            FREE_EVENT_NAME_PATTERN,
            error=(
                f"Must be 1-{EVENT_TYPE_MAX} letters, digits and _ . : / & ' ( ) + , - "
                "in words joined by single spaces."
            ),
        )

    def __call__(self, value: Any) -> Any:
        if len(value) > EVENT_TYPE_MAX:
            raise ValidationError(self.error)
        return super().__call__(value)


def identity_field() -> fields.String:
    """An optional userId or anonymousId: userId's length and characters."""
    return fields.String(validate=[validate.Length(min=1, max=USER_ID_MAX), PlainText()])


def label_field(max_length: int) -> fields.String:
    """An optional text of 1-`max_length` characters under userId's character rule."""
    return fields.String(validate=[validate.Length(min=1, max=max_length), PlainText()])

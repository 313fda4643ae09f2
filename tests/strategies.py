"""Hypothesis strategies for events as a client may send them, and an exact comparison
of JSON values. Shared by the unit properties and the integration round trip."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

EVENT_TYPES = ("LOGIN", "LOGOUT", "PRODUCT_VIEW")

# Every code point, lone surrogates included: a client can send "\ud800" as a JSON
# escape, and the producer must refuse it rather than write something unreadable.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
# Mostly text that can be written, so that most examples are accepted and carried all
# the way; the rest probe what must be refused.
usual_text = st.text(st.characters(codec="utf-8"), max_size=12)
text = st.one_of(usual_text, usual_text, usual_text, usual_text, any_text)
# Characters near the userId rule (shared.events.USER_ID_FORBIDDEN): controls (C0, DEL,
# C1), line and paragraph separators and bidi formatting, which are refused; other
# format characters (zero-width space and joiners, soft hyphen, BOM, a tag character,
# an Arabic number sign) and a space, which are allowed.
near_the_rule = st.sampled_from(
    [*"\x00\t\n\r\x1f\x7f\x80\x85\x9f\u2028\u2029\u061c\u200e\u200f",
     *"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
     *"\u200b\u200c\u200d\u00ad\ufeff\U000e0041\u0600\u2060 "]
)  # fmt: skip
# Short text with some of those characters among ordinary ones.
text_near_the_rule = st.lists(
    st.one_of(near_the_rule, st.characters(codec="utf-8")), min_size=1, max_size=8
).map("".join)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    # NaN and infinities now and then: they must be refused, not carried.
    st.floats(),
    text,
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=30,
)
payloads = st.dictionaries(text, json_values, max_size=6)

plausible = {"userId": usual_text.filter(bool), "eventType": st.sampled_from(EVENT_TYPES)}
odd = {
    "userId": st.one_of(any_text, st.text(min_size=126, max_size=130), text_near_the_rule),
    "eventType": st.one_of(st.sampled_from(EVENT_TYPES), text),
}
inputs = st.one_of(
    st.fixed_dictionaries(plausible, optional={"payload": payloads}),
    # Odd userIds and eventTypes, and unknown fields, which must be refused whatever
    # else the event holds.
    st.fixed_dictionaries(odd, optional={"payload": payloads, "extra": json_values}),
)


def identical(left: Any, right: Any) -> bool:
    """JSON values equal in type, in key order and bit for bit: `==` alone would take
    1 for 1.0, True for 1, and 0.0 for -0.0."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    if isinstance(left, dict):
        return list(left) == list(right) and all(identical(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(identical, left, right))
    return bool(left == right)

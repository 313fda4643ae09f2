"""The HTTP contract with an in-memory publisher: validation, answers, errors."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from producer_service import create_app
from producer_service.config import ProducerSettings
from producer_service.errors import error_response
from shared.config import CommonSettings
from shared.event_rules import TIMESTAMP_PATTERN, UUID_PATTERN
from shared.events import new_event_id
from shared.json_codec import MAX_JSON_NESTING
from tests.unit.producer.fakes import InMemoryEventPublisher
from tests.unit.producer.scrape import sample

GOOD = {"userId": "user-1", "eventType": "LOGIN", "payload": {"page": "/home"}}


def post(client: FlaskClient, path: str, body: Any, **headers: str) -> Any:
    return client.post(
        path, data=json.dumps(body), content_type="application/json", headers=headers
    )


def assert_json_error(response: Any, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error: dict[str, Any] = response.get_json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    return error


# (case, body or raw bytes, content type, status, error type, text the error must contain)
BAD_INPUTS = [
    ("invalid json", b'{"userId": ', "application/json", 400, "bad_request", "not valid JSON"),
    ("empty body", b"", "application/json", 400, "bad_request", "not valid JSON"),
    (
        "NaN is not JSON",
        b'{"userId":"u","eventType":"LOGIN","payload":{"x":NaN}}',
        "application/json",
        400,
        "bad_request",
        "NaN",
    ),
    ("top level not object", [GOOD], "application/json", 400, "bad_request", "JSON object"),
    (
        "missing userId",
        {"eventType": "LOGIN"},
        "application/json",
        400,
        "validation_error",
        "userId",
    ),
    (
        "empty userId",
        {**GOOD, "userId": ""},
        "application/json",
        400,
        "validation_error",
        "Length must be between 1 and 128",
    ),
    (
        "userId too long",
        {**GOOD, "userId": "u" * 129},
        "application/json",
        400,
        "validation_error",
        "Length must be between 1 and 128",
    ),
    (
        "userId not a string",
        {**GOOD, "userId": 42},
        "application/json",
        400,
        "validation_error",
        "Not a valid string",
    ),
    (
        "missing eventType",
        {"userId": "u"},
        "application/json",
        400,
        "validation_error",
        "eventType",
    ),
    (
        "unknown eventType",
        {**GOOD, "eventType": "PURCHASE"},
        "application/json",
        400,
        "validation_error",
        "Must be one of: LOGIN, LOGOUT, PRODUCT_VIEW",
    ),
    (
        "payload is a list",
        {**GOOD, "payload": [1]},
        "application/json",
        400,
        "validation_error",
        "Not a valid mapping type",
    ),
    (
        "payload is a string",
        {**GOOD, "payload": "x"},
        "application/json",
        400,
        "validation_error",
        "Not a valid mapping type",
    ),
    (
        "payload is null",
        {**GOOD, "payload": None},
        "application/json",
        400,
        "validation_error",
        "may not be null",
    ),
    (
        "payload over the cap",
        {**GOOD, "payload": {"x": "y" * 300}},
        "application/json",
        400,
        "validation_error",
        "the limit is 256",
    ),
    (
        "unknown field",
        {**GOOD, "color": "red"},
        "application/json",
        400,
        "validation_error",
        "color",
    ),
    ("wrong content type", GOOD, "text/plain", 415, "unsupported_media_type", "application/json"),
    (
        "form content type",
        GOOD,
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
        "application/json",
    ),
    (
        "body over the limit",
        {**GOOD, "payload": {"x": "y" * 10_000}},
        "application/json",
        413,
        "request_entity_too_large",
        "",
    ),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error_type", "text"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input(
    client: FlaskClient,
    fake: InMemoryEventPublisher,
    body: Any,
    content_type: str,
    status: int,
    error_type: str,
    text: str,
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = client.post("/events/generate", data=data, content_type=content_type)
    error = assert_json_error(response, status, error_type)
    assert text in json.dumps(error)
    assert fake.records == []


# Bodies Python's json module parses but that cannot be written back as strict JSON: a
# number out of float range (parses to inf), and "\ud800" escapes (lone surrogates) in
# every place a string can be, including an unknown field's name, which error messages echo.
UNWRITABLE = {
    "1e400 in payload": b'{"userId":"u","eventType":"LOGIN","payload":{"a":1e400}}',
    "-1e400 nested in payload": b'{"userId":"u","eventType":"LOGIN","payload":{"a":[-1e400]}}',
    "1e400 in unknown field": b'{"userId":"u","eventType":"LOGIN","x":1e400}',
    "1e400 as userId": b'{"userId":1e400,"eventType":"LOGIN"}',
    "surrogate userId": b'{"userId":"u\\ud800","eventType":"LOGIN"}',
    "surrogate eventType": b'{"userId":"u","eventType":"\\udfff"}',
    "surrogate payload value": b'{"userId":"u","eventType":"LOGIN","payload":{"a":"\\ud800"}}',
    "surrogate payload key": b'{"userId":"u","eventType":"LOGIN","payload":{"\\ud800":1}}',
    "surrogate unknown field name": b'{"userId":"u","eventType":"LOGIN","\\ud800":1}',
}


@pytest.mark.parametrize("path", ["/events/generate", "/events/batch"])
@pytest.mark.parametrize("body", list(UNWRITABLE.values()), ids=list(UNWRITABLE))
def test_unwritable_json_is_400_never_published(
    client: FlaskClient, fake: InMemoryEventPublisher, path: str, body: bytes
) -> None:
    data = body if path == "/events/generate" else b'{"events":[' + body + b"]}"
    response = client.post(path, data=data, content_type="application/json")
    error = assert_json_error(response, 400, "bad_request")
    assert error["message"].startswith("The body cannot be accepted as JSON:")
    assert ("not finite" in error["message"]) == (b"1e400" in body)
    assert fake.records == []


@pytest.mark.parametrize("depth", [*range(900, 1001), 5000])
@pytest.mark.parametrize("path", ["/events/generate", "/events/batch"])
def test_deep_nesting_is_never_a_500(fake: InMemoryEventPublisher, path: str, depth: int) -> None:
    # Default limits: the body must fit, the depth is what is under test.
    client = create_app(ProducerSettings(), publisher=fake).test_client()
    payload = b'{"a":' * depth + b"1" + b"}" * depth
    event = b'{"userId":"u","eventType":"LOGIN","payload":' + payload + b"}"
    data = event if path == "/events/generate" else b'{"events":[' + event + b"]}"
    response = client.post(path, data=data, content_type="application/json")
    assert response.status_code in (201, 400), (depth, response.get_data()[:300])
    assert response.mimetype == "application/json"
    if response.status_code == 400:
        assert fake.records == []


@pytest.mark.parametrize("path", ["/events/generate", "/events/batch"])
def test_payload_nesting_is_capped_where_the_consumer_caps_it(
    fake: InMemoryEventPublisher, path: str
) -> None:
    # The consumer dead-letters records nested deeper than MAX_JSON_NESTING, so the
    # producer must refuse them rather than answer 201 for an event never stored.
    client = create_app(ProducerSettings(), publisher=fake).test_client()

    def post_depth(depth: int) -> int:
        payload = b'{"a":' * depth + b"1" + b"}" * depth
        event = b'{"userId":"u","eventType":"LOGIN","payload":' + payload + b"}"
        data = event if path == "/events/generate" else b'{"events":[' + event + b"]}"
        return client.post(path, data=data, content_type="application/json").status_code

    assert post_depth(MAX_JSON_NESTING - 5) == 201
    assert post_depth(MAX_JSON_NESTING + 1) == 400
    assert len(fake.records) == 1


def test_error_answers_are_json_whatever_they_echo() -> None:
    # The handlers must never fail on what a message echoes: a 400 must not become a 500.
    body = {"\ud800": ["Unknown field."], "n": float("inf"), "deep": [[[]]]}
    with create_app(ProducerSettings(), publisher=InMemoryEventPublisher()).app_context():
        response = error_response(400, "validation_error", "bad \udfff", fields=body)
    error = json.loads(response.get_data())["error"]
    assert error["message"] == "bad \\udfff"
    assert error["fields"] == {"\\ud800": ["Unknown field."], "n": "inf", "deep": [[[]]]}


def test_validation_error_names_fields(client: FlaskClient) -> None:
    response = post(client, "/events/generate", {"userId": "", "eventType": "X", "extra": 1})
    fields = assert_json_error(response, 400, "validation_error")["fields"]
    assert set(fields) == {"userId", "eventType", "extra"}
    assert fields["extra"] == ["Unknown field."]


def test_publish_returns_the_enriched_event(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    response = post(client, "/events/generate", GOOD)
    assert response.status_code == 201
    event = response.get_json()
    assert re.match(UUID_PATTERN, event["eventId"])
    assert re.match(TIMESTAMP_PATTERN, event["timestamp"])
    assert event["schemaVersion"] == 1
    assert {k: event[k] for k in GOOD} == GOOD
    assert fake.records == [event]


def test_payload_defaults_to_empty_object(client: FlaskClient) -> None:
    response = post(client, "/events/generate", {"userId": "u", "eventType": "LOGOUT"})
    assert response.status_code == 201
    assert response.get_json()["payload"] == {}


def test_idempotency_key_gives_the_same_event_id(client: FlaskClient) -> None:
    first = post(client, "/events/generate", GOOD, **{"Idempotency-Key": "k-1"}).get_json()
    again = post(client, "/events/generate", GOOD, **{"Idempotency-Key": "k-1"}).get_json()
    other = post(client, "/events/generate", GOOD, **{"Idempotency-Key": "k-2"}).get_json()
    assert first["eventId"] == again["eventId"] == new_event_id(GOOD, "k-1")
    assert other["eventId"] != first["eventId"]


def test_reused_key_with_a_different_event_is_a_new_event(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    # The LOGOUT used to get the LOGIN's id, and the consumer dropped it.
    login = {"userId": "u", "eventType": "LOGIN", "payload": {}}
    logout = {"userId": "u", "eventType": "LOGOUT", "payload": {}}
    first = post(client, "/events/generate", login, **{"Idempotency-Key": "K2"})
    second = post(client, "/events/generate", logout, **{"Idempotency-Key": "K2"})
    assert first.status_code == second.status_code == 201
    assert first.get_json()["eventId"] != second.get_json()["eventId"]
    assert [r["eventType"] for r in fake.records] == ["LOGIN", "LOGOUT"]
    assert len({r["eventId"] for r in fake.records}) == 2


@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
def test_bad_idempotency_key(client: FlaskClient, key: str) -> None:
    response = post(client, "/events/generate", GOOD, **{"Idempotency-Key": key})
    assert_json_error(response, 400, "bad_request")


def test_unacknowledged_event_is_503_never_201(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    fake.fail_all = "timeout"
    response = post(client, "/events/generate", GOOD)
    assert_json_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"


def batch_of(n: int) -> dict[str, Any]:
    return {"events": [{**GOOD, "userId": f"user-{i}"} for i in range(n)]}


def test_batch_gives_event_ids_in_input_order(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    response = post(client, "/events/batch", batch_of(5))
    assert response.status_code == 201
    ids = response.get_json()["eventIds"]
    assert ids == [r["eventId"] for r in fake.records]
    assert [r["userId"] for r in fake.records] == [f"user-{i}" for i in range(5)]


def keyed(client: FlaskClient, events: list[dict[str, Any]], key: str = "K") -> list[str]:
    response = post(client, "/events/batch", {"events": events}, **{"Idempotency-Key": key})
    assert response.status_code == 201, response.get_data(as_text=True)
    ids: list[str] = response.get_json()["eventIds"]
    return ids


def test_batch_retry_of_any_subset_in_any_order_keeps_each_events_id(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    # [e1] alone under K used to get e0's id.
    e0, e1, e2 = batch_of(3)["events"]
    first = keyed(client, [e0, e1, e2])
    assert len(set(first)) == 3
    assert first == [new_event_id(e, "K") for e in (e0, e1, e2)]
    assert keyed(client, [e1]) == [first[1]]
    assert keyed(client, [e2, e1, e0]) == first[::-1]
    assert keyed(client, [e2, e0]) == [first[2], first[0]]
    # The failed item of a 207 may also be retried on its own endpoint.
    single = post(client, "/events/generate", e1, **{"Idempotency-Key": "K"}).get_json()
    assert single["eventId"] == first[1]
    # Every record published for e1, whichever request carried it, has e1's id.
    by_user = {(r["userId"], r["eventId"]) for r in fake.records}
    assert by_user == {(e["userId"], i) for e, i in zip((e0, e1, e2), first, strict=True)}


def test_single_key_ending_in_an_index_is_not_a_batch_item(client: FlaskClient) -> None:
    e0 = batch_of(1)["events"][0]
    in_batch = keyed(client, [e0, {**e0, "eventType": "LOGOUT"}])
    alone = post(client, "/events/generate", e0, **{"Idempotency-Key": "K:0"}).get_json()
    assert alone["eventId"] not in in_batch


def test_keyed_batch_with_identical_items_is_422_and_publishes_nothing(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    e0 = {"userId": "u", "eventType": "LOGIN", "payload": {"a": 1, "b": 2}}
    e1 = {"userId": "u", "eventType": "LOGOUT"}
    same_as_e0 = {"userId": "u", "eventType": "LOGIN", "payload": {"b": 2, "a": 1}}
    body = {"events": [e0, e1, same_as_e0, e1, e0]}
    response = post(client, "/events/batch", body, **{"Idempotency-Key": "K"})
    error = assert_json_error(response, 422, "duplicate_items")
    assert error["items"] == [
        {"index": 2, "duplicateOf": 0},
        {"index": 3, "duplicateOf": 1},
        {"index": 4, "duplicateOf": 0},
    ]
    assert "nothing was published" in error["message"]
    assert fake.records == []
    # Without a key each item is its own event.
    response = post(client, "/events/batch", body)
    assert response.status_code == 201
    assert len(set(response.get_json()["eventIds"])) == 5
    # Invalid items are still a 400 first: validation comes before identity.
    body["events"][1] = {"userId": "", "eventType": "LOGIN"}
    response = post(client, "/events/batch", body, **{"Idempotency-Key": "K"})
    assert_json_error(response, 400, "validation_error")


def test_many_identical_items_list_the_first_100(fake: InMemoryEventPublisher) -> None:
    client = create_app(ProducerSettings(max_batch_events=250), publisher=fake).test_client()
    body = {"events": [GOOD] * 250}
    response = post(client, "/events/batch", body, **{"Idempotency-Key": "K"})
    error = assert_json_error(response, 422, "duplicate_items")
    assert error["items"][:2] == [{"index": 1, "duplicateOf": 0}, {"index": 2, "duplicateOf": 0}]
    assert len(error["items"]) == 100
    assert error["omittedItems"] == 149
    assert fake.records == []


def test_batch_validation_is_all_or_nothing(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    body = batch_of(4)
    body["events"][1]["eventType"] = "NOPE"
    body["events"][3] = {"userId": "", "eventType": "LOGIN", "x": 1}
    error = assert_json_error(post(client, "/events/batch", body), 400, "validation_error")
    assert [item["index"] for item in error["items"]] == [1, 3]
    assert set(error["items"][0]["fields"]) == {"eventType"}
    assert set(error["items"][1]["fields"]) == {"userId", "x"}
    assert fake.records == []


# A newline (a forged log line), a right-to-left override (text shown backwards), and
# one of each other kind of character a userId may not hold.
HOSTILE_USER_IDS = [
    "mallory\u202e\ngpj.exe",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "nel\x85",
    "isolate\u2066x\u2069",
    "mark\u200e",
    "arabic\u061cmark",
    "paragraph\u2029separator",
]


@pytest.mark.parametrize("user_id", HOSTILE_USER_IDS)
def test_user_id_with_control_or_bidi_characters_is_400_never_published(
    client: FlaskClient, fake: InMemoryEventPublisher, user_id: str
) -> None:
    response = post(client, "/events/generate", {**GOOD, "userId": user_id})
    fields = assert_json_error(response, 400, "validation_error")["fields"]
    assert list(fields) == ["userId"]
    assert "control or bidirectional" in fields["userId"][0]
    body = batch_of(3)
    body["events"][2]["userId"] = user_id
    error = assert_json_error(post(client, "/events/batch", body), 400, "validation_error")
    assert [(item["index"], list(item["fields"])) for item in error["items"]] == [(2, ["userId"])]
    assert fake.records == []


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"events": []}, "Length must be between 1 and 5"),
        (batch_of(6), "Length must be between 1 and 5"),
        ({"events": "x"}, "Not a valid list"),
        ({}, "Missing data"),
        ({**batch_of(1), "more": 1}, "Unknown field"),
        ({"events": [5]}, "Invalid input type"),
    ],
)
def test_bad_batch_envelope(
    client: FlaskClient, fake: InMemoryEventPublisher, body: Any, text: str
) -> None:
    error = assert_json_error(post(client, "/events/batch", body), 400, "validation_error")
    assert text in json.dumps(error)
    assert fake.records == []


def test_too_many_events_is_400_before_any_item_is_validated(
    client: FlaskClient, fake: InMemoryEventPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_item_validation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("items were validated")

    # Items that are not even objects: the count alone decides, nothing looks at them.
    body = {"events": [0] * 2000}
    state_schema = client.application.extensions["producer"].batch_schema
    monkeypatch.setattr(state_schema, "load", no_item_validation)
    error = assert_json_error(post(client, "/events/batch", body), 400, "validation_error")
    assert "at most 5 events; this one has 2000" in error["message"]
    assert error["fields"] == {"events": ["Length must be between 1 and 5."]}
    assert len(response_bytes := json.dumps(error)) < 500, response_bytes
    assert fake.records == []


def test_many_invalid_items_list_the_first_100(fake: InMemoryEventPublisher) -> None:
    app = create_app(ProducerSettings(max_batch_events=1000), publisher=fake)
    body = {"events": [{"userId": "", "eventType": "LOGIN"}] * 1000}
    response = post(app.test_client(), "/events/batch", body)
    error = assert_json_error(response, 400, "validation_error")
    assert [item["index"] for item in error["items"]] == list(range(100))
    assert error["omittedItems"] == 900
    assert error["message"].startswith("1000 invalid event(s); nothing was published.")
    assert "900 more" in error["message"]


def test_few_invalid_items_omit_nothing(client: FlaskClient) -> None:
    body = batch_of(2)
    body["events"][0]["userId"] = ""
    error = assert_json_error(post(client, "/events/batch", body), 400, "validation_error")
    assert "omittedItems" not in error


def test_batch_body_cap_is_separate_from_the_event_count(fake: InMemoryEventPublisher) -> None:
    settings = ProducerSettings(max_batch_bytes=64 * 1024)
    assert settings.max_batch_body_bytes == 64 * 1024
    client = create_app(settings, publisher=fake).test_client()
    big = b'{"events": [' + b" " * 64 * 1024 + b"]}"
    response = client.post("/events/batch", data=big, content_type="application/json")
    assert_json_error(response, 413, "request_entity_too_large")


def test_batch_partly_acknowledged_is_207(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    fake.fail = {1: "timeout", 3: "broker_error"}
    response = post(client, "/events/batch", batch_of(4))
    assert response.status_code == 207
    body = response.get_json()
    assert [item["status"] for item in body["items"]] == [201, 503, 201, 503]
    assert [item["index"] for item in body["items"]] == [0, 1, 2, 3]
    assert [item["eventId"] for item in body["items"]] == body["eventIds"]
    assert "error" in body["items"][1] and "error" not in body["items"][0]


def test_batch_not_acknowledged_at_all_is_503(
    client: FlaskClient, fake: InMemoryEventPublisher
) -> None:
    fake.fail_all = "queue_full"
    assert_json_error(post(client, "/events/batch", batch_of(2)), 503, "unavailable")


def test_batch_body_limit_is_413(client: FlaskClient, settings: ProducerSettings) -> None:
    big = b'{"events": [' + b" " * settings.max_batch_body_bytes + b"]}"
    response = client.post("/events/batch", data=big, content_type="application/json")
    assert_json_error(response, 413, "request_entity_too_large")


@pytest.mark.parametrize(
    ("method", "path", "status", "error_type"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/events/generate", 405, "method_not_allowed"),
        ("PUT", "/events/batch", 405, "method_not_allowed"),
        ("POST", "/health", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_are_json(
    client: FlaskClient, method: str, path: str, status: int, error_type: str
) -> None:
    response = client.open(path, method=method)
    assert_json_error(response, status, error_type)
    if status == 405:
        assert "Allow" in response.headers


def test_unexpected_error_is_json_500_without_details(
    app: Flask, fake: InMemoryEventPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("secret internals")

    fake.publish = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        response = post(app.test_client(), "/events/generate", GOOD)
    error = assert_json_error(response, 500, "internal_error")
    assert "secret internals" not in json.dumps(error)
    assert "secret internals" in caplog.text


def test_no_line_per_event_by_default(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="producer_service"):
        assert post(client, "/events/generate", GOOD).status_code == 201
    assert [r.getMessage() for r in caplog.records] == []


def test_logs_have_event_facts_but_never_the_payload(
    fake: InMemoryEventPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app(ProducerSettings(log_events=True), publisher=fake).test_client()
    with caplog.at_level(logging.DEBUG, logger="producer_service"):
        post(client, "/events/generate", {**GOOD, "payload": {"secret": "hunter2"}})
        post(client, "/events/batch", {"events": [{**GOOD, "payload": {"secret": "hunter2"}}]})
    published = [r for r in caplog.records if r.getMessage() == "event published"]
    assert len(published) == 2
    for record in published:
        assert record.__dict__["user_id"] == "user-1"
        assert record.__dict__["event_type"] == "LOGIN"
        assert re.match(UUID_PATTERN, record.__dict__["event_id"])
    assert all("hunter2" not in str(r.__dict__) for r in caplog.records)


class TestApiKeys:
    @pytest.fixture
    def settings(self) -> ProducerSettings:
        return ProducerSettings(api_keys=("k-one", "k-two"))

    def test_missing_or_wrong_key_is_401(self, client: FlaskClient) -> None:
        assert_json_error(post(client, "/events/generate", GOOD), 401, "unauthorized")
        response = post(client, "/events/batch", batch_of(1), **{"X-API-Key": "nope"})
        assert_json_error(response, 401, "unauthorized")

    def test_valid_key_in_either_header(self, client: FlaskClient) -> None:
        assert post(client, "/events/generate", GOOD, **{"X-API-Key": "k-two"}).status_code == 201
        response = post(client, "/events/generate", GOOD, Authorization="Bearer k-one")
        assert response.status_code == 201

    def test_probes_need_no_key(self, client: FlaskClient) -> None:
        for path in ("/health", "/ready", "/metrics", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path


def test_health_and_ready(
    client: FlaskClient, fake: InMemoryEventPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    fake.is_ready = False
    fake.not_ready_reason = "the Kafka producer failed (broker-7.internal:9094 said no)"
    fake.not_ready_state = "client_failed"
    with caplog.at_level(logging.WARNING, logger="producer_service.app"):
        first = client.get("/ready")
        client.get("/ready")
    error = assert_json_error(first, 503, "unavailable")
    # Stable words for whoever asks; the reason, with its host, only in the log, once.
    assert error["checks"] == {"kafka": "client_failed"}
    assert "broker-7" not in first.get_data(as_text=True)
    reasons = [r.reason for r in caplog.records if r.getMessage() == "not ready"]  # type: ignore[attr-defined]
    assert reasons == [fake.not_ready_reason]


def test_metrics(client: FlaskClient, fake: InMemoryEventPublisher) -> None:
    http_201 = {"method": "POST", "route": "/events/generate", "status": "201"}
    http_503 = {**http_201, "status": "503"}
    watched = [
        ("producer_http_requests_total", http_201),
        ("producer_http_requests_total", http_503),
        ("producer_events_published_total", {"event_type": "LOGIN"}),
        ("producer_delivery_latency_seconds_count", {}),
        ("producer_delivery_latency_seconds_sum", {}),
        ("producer_delivery_failures_total", {"reason": "timeout"}),
    ]
    before = [sample(client, name, **labels) for name, labels in watched]
    post(client, "/events/generate", GOOD)
    fake.fail_all = "timeout"
    post(client, "/events/generate", GOOD)
    after = [sample(client, name, **labels) for name, labels in watched]
    change = [round(a - b, 6) for a, b in zip(after, before, strict=True)]
    # One 201 and one 503; one event published with the fake's 1 ms latency; one timeout.
    assert change == [1, 1, 1, 1, 0.001, 1]


def test_openapi_is_generated_from_the_schemas(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    schemas = spec["components"]["schemas"]
    assert {
        "EventInput",
        "EventRecord",
        "BatchInput",
        "BatchAccepted",
        "BatchReport",
        "Error",
    } <= set(schemas)
    assert schemas["EventInput"]["properties"]["eventType"]["enum"] == [
        "LOGIN",
        "LOGOUT",
        "PRODUCT_VIEW",
    ]
    assert schemas["BatchInput"]["properties"]["events"]["maxItems"] == 5
    batch_answers = spec["paths"]["/events/batch"]["post"]["responses"]
    assert set(batch_answers) >= {"201", "207", "400", "422", "503"}
    assert "duplicate_items" in batch_answers["422"]["description"]
    docs = client.get("/docs")
    assert docs.mimetype == "text/html" and "openapi.json" in docs.get_data(as_text=True)


def test_event_types_are_configurable(fake: InMemoryEventPublisher) -> None:
    client = create_app(
        ProducerSettings(common=CommonSettings(event_types=("PURCHASE",))), publisher=fake
    ).test_client()
    assert post(client, "/events/generate", {**GOOD, "eventType": "PURCHASE"}).status_code == 201
    assert post(client, "/events/generate", GOOD).status_code == 400

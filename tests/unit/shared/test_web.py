"""The web plumbing both services share (shared/web.py), checked through each service's
app: the same JSON error shape, the same /metrics rule, the same operational routes.

No network: the producer gets the in-memory publisher, and the consumer's Redis client
connects lazily, which none of these routes makes it do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from consumer_service.config import ConsumerSettings
from producer_service.config import ProducerSettings
from tests.unit.producer.fakes import InMemoryEventPublisher


def producer_app() -> Flask:
    from producer_service import create_app

    return create_app(ProducerSettings(), publisher=InMemoryEventPublisher())


def consumer_app() -> Flask:
    from consumer_service.api import create_app

    return create_app(ConsumerSettings())


@pytest.fixture(params=[producer_app, consumer_app], ids=["producer", "consumer"])
def app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    app: Flask = request.param()
    app.config["TESTING"] = True
    yield app


def test_an_empty_multiprocess_directory_means_in_process_metrics(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The consumer read the variable as set when merely present and answered a 500 (the
    # multiprocess collector refuses an empty path); one rule now, the producer's.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert b"# TYPE" in response.data


def test_http_errors_are_json_with_the_same_shape(app: Flask) -> None:
    client = app.test_client()
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.content_type == "application/json"
    assert missing.get_json()["error"]["type"] == "not_found"
    assert set(missing.get_json()["error"]) == {"type", "message"}
    wrong_method = client.delete("/health")
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"]["type"] == "method_not_allowed"
    assert set(wrong_method.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}


def test_an_unexpected_error_is_a_json_500_without_details(app: Flask) -> None:
    app.config["TESTING"] = False  # so Flask hands the exception to the handler

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"type": "internal_error", "message": "Internal server error."}
    }


def test_health_and_the_served_document_agree(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/health").get_json() == {"status": "ok"}
    document = client.get("/openapi.json").get_json()
    for path in ("/health", "/ready", "/metrics"):
        assert path in document["paths"]
    assert document["paths"]["/health"] == {
        "get": {
            "summary": "The process is alive",
            "responses": {
                "200": {
                    "description": "Alive.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                    },
                }
            },
        }
    }
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    detail_name = error["properties"]["error"]["$ref"].rsplit("/", 1)[1]
    detail = document["components"]["schemas"][detail_name]
    assert {"type", "message"} <= set(detail["properties"]) and detail["required"] == [
        "message",
        "type",
    ]

"""Every label of the producer's HTTP metrics comes from a fixed set, whatever the client
sends: a made-up method or path must not add a series to /metrics."""

from __future__ import annotations

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from producer_service import metrics
from tests.unit.producer.scrape import sample


def series(client: FlaskClient) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample of /metrics, by name and labels (values left out)."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_made_up_methods_and_paths_add_no_series(client: FlaskClient) -> None:
    # One of each first: the `other` method and the unmatched route appear once, and so
    # does the scrape itself.
    client.open("/events/generate", method="X0000")
    client.open("/made-up/0", method="GET")
    client.open("/made-up/0", method="Y0000")
    series(client)
    before = series(client)
    for i in range(1, 201):
        assert client.open("/events/generate", method=f"X{i:04}").status_code == 405
        assert client.open(f"/made-up/{i}", method="GET").status_code == 404
        assert client.open(f"/made-up/{i}", method=f"Y{i:04}").status_code == 404
    assert series(client) - before == set()


def test_made_up_methods_count_as_other(client: FlaskClient) -> None:
    labels = {"route": "<unmatched>", "method": "other", "status": "405"}
    counted = sample(client, "producer_http_requests_total", **labels)
    client.open("/events/generate", method="BREW")
    client.open("/events/generate", method="PROPFIND")
    assert sample(client, "producer_http_requests_total", **labels) == counted + 2


def test_methods_the_app_serves_keep_their_name(client: FlaskClient) -> None:
    for method in ("GET", "HEAD", "OPTIONS"):
        labels = {"route": "/health", "method": method, "status": "200"}
        counted = sample(client, "producer_http_requests_total", **labels)
        client.open("/health", method=method)
        assert sample(client, "producer_http_requests_total", **labels) == counted + 1
    # A standard method no route serves is not worth a series of its own.
    labels = {"route": "<unmatched>", "method": "other", "status": "405"}
    counted = sample(client, "producer_http_requests_total", **labels)
    client.open("/health", method="DELETE")
    assert sample(client, "producer_http_requests_total", **labels) == counted + 1


def test_status_label_is_bounded() -> None:
    assert metrics.status_label(201) == "201"
    assert metrics.status_label(599) == "599"
    assert metrics.status_label(600) == "other"
    assert metrics.status_label(99) == "other"
    assert metrics.status_label(-1) == "other"

"""The producer counts in memory and publishes once a second: what reaches the prometheus
metrics must be exactly what observing each request and delivery would have written."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from producer_service import metrics
from producer_service.delivery import REASON_TIMEOUT, Delivery


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(amounts=st.lists(st.floats(min_value=0, max_value=20), max_size=40))
@example(amounts=[0.001, 0.0025, 0.0011, 5.0, 10.0, 0.0])
def test_flushed_durations_are_what_observing_one_by_one_writes(amounts: list[float]) -> None:
    route = f"/test-{uuid.uuid4().hex}"
    one = CollectorRegistry()
    single = Histogram("d", "h", buckets=metrics.HTTP_LATENCY._upper_bounds[:-1], registry=one)
    for amount in amounts:
        single.observe(amount)
        metrics.count_request(route, "POST", 201, amount)
    metrics.count_request(route, "POST", 201, None)  # counted, no duration
    metrics.flush()
    name = "producer_http_request_duration_seconds"
    for bound in [*(str(b) for b in metrics.HTTP_LATENCY._upper_bounds[:-1]), "+Inf"]:
        assert sample(f"{name}_bucket", {"route": route, "le": bound}) == (
            one.get_sample_value("d_bucket", {"le": bound})
        ), bound
    assert sample(f"{name}_count", {"route": route}) == len(amounts)
    assert sample(f"{name}_sum", {"route": route}) == pytest.approx(
        one.get_sample_value("d_sum"), rel=1e-12, abs=1e-12
    )
    requests = {"route": route, "method": "POST", "status": "201"}
    assert sample("producer_http_requests_total", requests) == len(amounts) + 1


def test_deliveries_reach_the_metrics_at_flush_and_not_before() -> None:
    event_type = f"TYPE_{uuid.uuid4().hex}"
    metrics.label_event_types([event_type])  # as an app listing it would
    published = {"event_type": event_type}
    # What earlier tests of this process counted is published first, so that the
    # figures read next are this test's starting point.
    metrics.flush()
    failed_before = sample("producer_delivery_failures_total", {"reason": REASON_TIMEOUT})
    acked_before = sample("producer_delivery_latency_seconds_count")
    deliveries = [
        Delivery("a", 0, 1, latency=0.004),
        Delivery("b", 0, 2, latency=0.2),
        Delivery("c", reason=REASON_TIMEOUT, error="late"),
    ]
    metrics.observe_deliveries(deliveries, [event_type] * 3)
    assert sample("producer_events_published_total", published) == 0
    metrics.flush()
    assert sample("producer_events_published_total", published) == 2
    assert sample("producer_delivery_failures_total", {"reason": REASON_TIMEOUT}) == (
        failed_before + 1
    )
    assert sample("producer_delivery_latency_seconds_count") == acked_before + 2
    # A flush with nothing new adds nothing.
    metrics.flush()
    assert sample("producer_events_published_total", published) == 2


def test_free_text_event_names_share_one_label() -> None:
    """With `*` in EVENT_TYPES clients choose event names; each must not become a series."""
    from producer_service import create_app
    from producer_service.config import ProducerSettings
    from shared.config import CommonSettings
    from tests.unit.producer.fakes import InMemoryEventPublisher

    settings = ProducerSettings(common=CommonSettings(kafka_topic="t", event_types=("LOGIN", "*")))
    client = create_app(settings, publisher=InMemoryEventPublisher()).test_client()
    names = [f"Order Completed {uuid.uuid4().hex[:8]}" for _ in range(3)]
    metrics.flush()
    free_before = sample("producer_events_published_total", {"event_type": "free-text"})
    login_before = sample("producer_events_published_total", {"event_type": "LOGIN"})
    for name in [*names, "LOGIN"]:
        answer = client.post("/events/generate", json={"userId": "u", "eventType": name})
        assert answer.status_code == 201, answer.get_json()
    metrics.flush()
    assert sample("producer_events_published_total", {"event_type": "free-text"}) == (
        free_before + 3
    )
    assert sample("producer_events_published_total", {"event_type": "LOGIN"}) == login_before + 1
    for name in names:
        assert sample("producer_events_published_total", {"event_type": name}) == 0

"""The real `producer-service` with two gevent workers counts in memory and publishes once a
second: a scrape made a little over a second after the traffic sees every request and
every acknowledged event exactly once, whichever worker served what."""

from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.services import running_producer


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_request_and_event_is_counted_once_across_workers(
    kafka_bootstrap: str, topic: str
) -> None:
    with running_producer(
        kafka_bootstrap, topic, PRODUCER_WORKERS="2", PRODUCER_WORKER_CLASS="gevent"
    ) as producer:
        base = producer.base
        statuses = []
        for i in range(60):
            # A new connection each time, so both workers take requests.
            body = {"userId": f"user-{i}", "eventType": "LOGOUT", "payload": {"i": i}}
            statuses.append(requests.post(f"{base}/events/generate", json=body, timeout=10))
        for _ in range(7):
            bad = {"userId": "", "eventType": "LOGOUT"}
            statuses.append(requests.post(f"{base}/events/generate", json=bad, timeout=10))
        assert [r.status_code for r in statuses] == [201] * 60 + [400] * 7
        time.sleep(2.5)  # the flush interval, twice, and some
        got = samples(base)
    route = (("method", "POST"), ("route", "/events/generate"))
    assert got[("producer_http_requests_total", (*route, ("status", "201")))] == 60
    assert got[("producer_http_requests_total", (*route, ("status", "400")))] == 7
    assert got[("producer_events_published_total", (("event_type", "LOGOUT"),))] == 60
    assert got[("producer_delivery_latency_seconds_count", ())] == 60
    duration = (("route", "/events/generate"),)
    assert got[("producer_http_request_duration_seconds_count", duration)] == 67

"""Reading one sample from the service's own /metrics answer, for tests that assert what
their requests changed (the registry is process-wide, so earlier tests left values)."""

from __future__ import annotations

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families


def sample(client: FlaskClient, name: str, **labels: str) -> float:
    """The value of sample `name` with exactly `labels` in GET /metrics, 0 if absent."""
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0

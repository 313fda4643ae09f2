"""What the bench smoke tests share."""

from __future__ import annotations

from typing import Any

import redis
from confluent_kafka.admin import AdminClient


def assert_run_left_nothing(results: dict[str, Any], kafka_bootstrap: str, redis_url: str) -> None:
    """The bench run behind `results` deleted every topic and Redis key named for its
    run id."""
    run_id = results["run_id"]
    left = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in left if run_id in t]
    client = redis.Redis.from_url(redis_url)
    try:
        assert not list(client.scan_iter(match=f"bench:{run_id}:*", count=1000))
    finally:
        client.close()

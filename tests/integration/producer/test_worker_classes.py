"""Under gunicorn's `gevent` worker, requests are greenlets of one thread: one waiting for
its Kafka acknowledgement must not hold up the others, and they share linger batches."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.services import running_producer

LINGER_MS = 500
CONCURRENT = 16


def test_gevent_requests_wait_for_acks_together(kafka_bootstrap: str, topic: str) -> None:
    def post(n: int) -> int:
        body = {"userId": f"user-{n}", "eventType": "LOGIN", "payload": {"n": n}}
        return requests.post(f"{base}/events/generate", json=body, timeout=30).status_code

    with running_producer(
        kafka_bootstrap,
        topic,
        PRODUCER_WORKERS="1",
        PRODUCER_WORKER_CLASS="gevent",
        # Every record waits this long for company: served one after the other, the
        # requests below would take CONCURRENT x 0.5 s.
        PRODUCER_LINGER_MS=str(LINGER_MS),
        LOG_LEVEL="INFO",
    ) as producer:
        base = producer.base
        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENT + 1) as pool:
            answers = list(pool.map(post, range(CONCURRENT)))
        took = time.monotonic() - started
        # /health while requests wait: answered at once, not after a linger.
        with ThreadPoolExecutor(2) as pool:
            waiting = pool.submit(post, CONCURRENT)
            time.sleep(0.1)
            health_started = time.monotonic()
            assert requests.get(f"{base}/health", timeout=5).status_code == 200
            health_took = time.monotonic() - health_started
            assert waiting.result() == 201
        returncode = producer.stop()
    stderr = producer.log()
    assert returncode == 0, stderr
    assert '"requests":"greenlets"' in stderr, stderr
    assert answers == [201] * CONCURRENT
    # Together: about one linger (plus start-up of the connections), far from 16 of them.
    assert took < CONCURRENT * LINGER_MS / 1000 / 2, took
    assert health_took < LINGER_MS / 1000 / 2, health_took

"""Redis stopped (killed) and restarted mid-stream: nothing lost, nothing doubled, offsets
held back meanwhile, and the replica reports not-ready while it waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.status import StatusFile
from consumer_service.storage import RedisEventStore

from .conftest import PrivateRedis, WorkerThread, make_record, produce, wait_until, with_
from .test_worker import committed_total


def test_redis_killed_and_restarted_mid_stream_loses_and_doubles_nothing(
    settings: ConsumerSettings,
    start_worker: Callable[..., WorkerThread],
    make_store: Callable[..., RedisEventStore],
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    settings = with_(settings, batch_size=50, redis_timeout_seconds=0.5)
    settings = with_(settings, common=with_(settings.common, redis_url=private_redis.url))
    store = make_store(settings, private_redis.url)
    status = StatusFile(tmp_path / "status.json")
    client = create_app(settings, make_store(settings, private_redis.url), status).test_client()
    bootstrap, topic = settings.common.kafka_bootstrap_servers, settings.common.kafka_topic

    records = [make_record(f"user-{n % 7}", payload={"n": n}) for n in range(3000)]
    produce(bootstrap, topic, records[:2000])
    worker = start_worker(settings, make_store(settings, private_redis.url), status_file=status)
    wait_until(lambda: store.stats()["processed"] >= 200, 20, "some stored")

    private_redis.kill()
    produce(bootstrap, topic, records[2000:])
    wait_until(lambda: (s := status.read()) and s.state == "backing_off", 10, "backing off")
    assert client.get("/ready").status_code == 503
    committed_during_outage = committed_total(settings)
    time.sleep(1.0)  # several retries' worth: offsets must not move while Redis is down
    assert committed_total(settings) == committed_during_outage < len(records)

    private_redis.start()
    stats = wait_until(
        lambda: (s := store.stats())["processed"] >= len(records) and s, 30, "all stored"
    )
    assert stats["processed"] == len(records)
    assert stats["duplicatesSkipped"] == 0
    assert stats["stored"] == len(records)
    for r in records[::97]:
        assert store.get(r["eventId"]) is not None
    wait_until(lambda: committed_total(settings) == len(records), 10, "all committed")
    wait_until(lambda: (s := status.read()) and s.state == "running", 5, "running again")
    assert client.get("/ready").status_code == 200
    assert worker.stop() == 0

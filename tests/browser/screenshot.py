"""Take docs/dashboard.png: two real consumer replicas (`python -m consumer_service`, the
API under gunicorn) on a topic of their own, with traffic flowing.

    .venv/bin/python -m tests.browser.screenshot [--out docs/dashboard.png] [--seconds 45]

Needs the local Kafka and Redis (`make infra`) and Debian's chromium and chromium-driver.
The replicas get their own topic, group and Redis key prefix, all removed at the end,
so it can run next to anything else. The traffic varies in rate and carries a few
duplicates and poison records, so every part of the page has something to show.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from selenium import webdriver

from infra.topics import ensure_topics
from shared.events import record_headers, utc_timestamp
from shared.json_codec import compact_json
from tests.conftest import DEFAULT_BOOTSTRAP, DEFAULT_REDIS_URL, ROOT
from tests.services import free_port

from .helpers import chromium, missing_browser

TYPES = ("LOGIN", "PRODUCT_VIEW", "PRODUCT_VIEW", "PRODUCT_VIEW", "LOGOUT")


def replica(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "consumer_service"],
        env={**env, "CONSUMER_PORT": str(port)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} was not ready within {timeout} s")


def event(rng: random.Random) -> dict[str, object]:
    kind = rng.choice(TYPES)
    payload: dict[str, object] = {"device": rng.choice(["web", "ios", "android"])}
    if kind == "PRODUCT_VIEW":
        payload["sku"] = f"SKU-{rng.randint(100, 999)}"
    return {
        "eventId": str(uuid.uuid4()),
        "userId": f"user-{rng.randint(1, 60)}",
        "eventType": kind,
        "timestamp": utc_timestamp(),
        "payload": payload,
        "schemaVersion": 1,
    }


def traffic(producer: Producer, topic: str, seconds: float, rng: random.Random) -> None:
    """A rate that swells and ebbs; now and then a duplicate or a poison record."""
    started = time.monotonic()
    sent: list[dict[str, object]] = []
    tick = 0
    while (elapsed := time.monotonic() - started) < seconds:
        rate = 220 + 160 * math.sin(elapsed / 7) + rng.uniform(-30, 30)
        for _ in range(max(0, int(rate / 10))):
            record = event(rng)
            sent.append(record)
            producer.produce(
                topic,
                key=str(record["userId"]).encode(),
                value=compact_json(record),
                headers=record_headers(record),
            )
        if tick % 13 == 0 and sent:
            again = rng.choice(sent)
            producer.produce(topic, key=str(again["userId"]).encode(), value=compact_json(again))
        if tick % 37 == 0:
            producer.produce(topic, key=b"user-x", value=b'{"eventId": "not closed"')
        if tick % 53 == 0:
            producer.produce(topic, key=b"user-y", value=compact_json({"userId": "user-y"}))
        producer.poll(0)
        tick += 1
        time.sleep(0.1)
    producer.flush(15)


def capture(driver: webdriver.Chrome, out: Path) -> None:
    """The whole page, not just the window (Chromium's own full-page capture)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--seconds", type=float, default=45)
    args = parser.parse_args()
    if (reason := missing_browser()) is not None:
        raise SystemExit(reason)

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    unique = uuid.uuid4().hex[:8]
    topic, group, prefix = f"dashboard-{unique}", f"dashboard-{unique}", f"dashboard:{unique}"
    ensure_topics(bootstrap, [topic, f"{topic}.dlq"], 6)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "KAFKA_TOPIC": topic,
        "KAFKA_CONSUMER_GROUP": group,
        "CONSUMER_REDIS_PREFIX": prefix,
        "LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ports = [free_port(), free_port()]
    replicas = [replica(env, ports[0])]
    url = f"http://127.0.0.1:{ports[0]}"
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    try:
        wait_ready(url)
        with chromium(width=1366, height=1000) as driver:
            driver.get(f"{url}/dashboard")
            rng = random.Random(20261124)
            traffic(producer, topic, args.seconds / 3, rng)
            # A second replica joins while events flow: the group rebalances.
            replicas.append(replica(env, ports[1]))
            traffic(producer, topic, 2 * args.seconds / 3, rng)
            # Taken while the last events are still arriving, so the rates are not zero.
            capture(driver, Path(args.out))
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            if errors:
                print(f"console errors: {errors}", file=sys.stderr)
                return 1
        print(f"wrote {args.out}")
        return 0
    finally:
        for process in replicas:
            process.send_signal(signal.SIGTERM)
        for process in replicas:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics([topic, f"{topic}.dlq"]).values():
            future.result()
        for future in admin.delete_consumer_groups([group]).values():
            future.result()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    sys.exit(main())

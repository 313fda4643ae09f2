"""The Kafka ACLs of docs/operations.md ("Kafka ACLs: the producer is the topic's only
writer"), run as written against a broker with an authorizer: the producer's principal
writes the events topic, the consumer's and the admin's cannot, and each service still
does its job under its own principal.

The broker is a private one, started by infra/kafka.sh with its own state directory and
free ports (its SASL listener included), so the users and ACLs made here never reach the
shared broker. It needs a JDK and the broker's jars (LOCAL_KAFKA_LIBS, or resolved on
first use as for the local stack).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from consumer_service.admin.cli import main as admin_main
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.dlq import KafkaDeadLetterQueue
from consumer_service.pipeline.worker import Worker
from consumer_service.storage import RedisEventStore
from consumer_service.topics import ensure_dlq_topic
from infra.topics import ensure_topics, upsert_scram_user, wait_for_broker
from shared.config import CommonSettings
from shared.json_codec import compact_json
from shared.kafka import client_config
from tests.conftest import kafka_start_lock
from tests.integration.consumer.conftest import WorkerThread, make_record, wait_until
from tests.services import free_port

from .conftest import ROOT, _unavailable

DOC = ROOT / "docs" / "operations.md"
MARKER = "<!-- tests/integration/sasl/test_acls.py runs the next block as it is written. -->"
SUPER_USER = ("pipeline", "pipeline-secret")  # infra/kafka.sh's SASL user, a super user
PRINCIPALS = ("events-producer", "events-consumer", "events-admin")
TOPIC = "acl-events"
GROUP = "acl-consumers"


def documented_acl_block() -> str:
    """The shell block that follows MARKER in docs/operations.md."""
    text = DOC.read_text()
    found = re.search(re.escape(MARKER) + r"\n```sh\n(.*?)\n```", text, re.DOTALL)
    assert found is not None, f"{DOC} has no ACL block after its marker"
    return found.group(1)


@dataclass
class AclBroker:
    """A private single-node broker of infra/kafka.sh with LOCAL_KAFKA_AUTHORIZER=true (super
    users User:ANONYMOUS and User:pipeline) and a SASL listener."""

    state_dir: Path
    libs: Path
    port: int
    sasl_port: int

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "kafka" / "kafka.pid"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def common(self, username: str, password: str) -> CommonSettings:
        return CommonSettings(
            kafka_bootstrap_servers=self.sasl_bootstrap,
            kafka_topic=TOPIC,
            kafka_topic_partitions=3,
            redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=username,
            kafka_sasl_password=password,
        )

    def stop(self) -> None:
        # Its data is thrown away with it: SIGKILL is enough, and quick.
        if self.pidfile.exists():
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(self.pidfile.read_text()), signal.SIGKILL)


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    if shutil.which("java") is None:
        _unavailable("no JDK: the ACL tests start a broker of their own")
    state_dir = tmp_path_factory.mktemp("acl-broker")
    libs = Path(os.environ.get("LOCAL_KAFKA_LIBS", ROOT / ".local" / "kafka" / "libs"))
    broker = AclBroker(state_dir, libs, free_port(), free_port())
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "LOCAL_STATE_DIR": str(state_dir),
        "LOCAL_KAFKA_PORT": str(broker.port),
        "LOCAL_KAFKA_CONTROLLER_PORT": str(free_port()),
        "LOCAL_KAFKA_SASL_PORT": str(broker.sasl_port),
        "LOCAL_KAFKA_SASL_USERNAME": SUPER_USER[0],
        "LOCAL_KAFKA_SASL_PASSWORD": SUPER_USER[1],
        "LOCAL_KAFKA_LIBS": str(libs),
        "LOCAL_KAFKA_HEAP": "256m",
        "LOCAL_KAFKA_AUTHORIZER": "true",
    }
    try:
        with kafka_start_lock():
            subprocess.run(
                [str(ROOT / "infra" / "kafka.sh"), "start"], check=True, env=env, timeout=180
            )
        assert wait_for_broker(broker.common(*SUPER_USER), 30)
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def granted(acl_broker: AclBroker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The three principals created, and the documented ACL block run as written (with
    `kafka-acls.sh` being the class it runs, from the broker's jars). Their passwords."""
    passwords = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in PRINCIPALS}
    for name, password in passwords.items():
        upsert_scram_user(acl_broker.common(*SUPER_USER), name, password)
    work = tmp_path_factory.mktemp("acl-commands")
    (work / "admin.properties").write_text(
        "security.protocol=SASL_PLAINTEXT\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{SUPER_USER[0]}" password="{SUPER_USER[1]}";\n'
    )
    script = (
        "set -euo pipefail\n"
        'kafka-acls.sh() { java -Xmx128m -cp "$KAFKA_LIBS/*" '
        'org.apache.kafka.tools.AclCommand "$@"; }\n' + documented_acl_block()
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "KAFKA_LIBS": str(acl_broker.libs),
        "BOOTSTRAP": acl_broker.sasl_bootstrap,
        "TOPIC": TOPIC,
        "GROUP": GROUP,
    }
    done = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The admin's principal makes the events topic (infra/topics.py's job); the consumer
    # makes its dead-letter topic itself, below.
    ensure_topics(acl_broker.common("events-admin", passwords["events-admin"]), [TOPIC], 3)
    return passwords


def deliveries(common: CommonSettings, values: list[bytes], idempotent: bool) -> list[int]:
    """Produce `values` to the events topic as `common`'s principal; the error code of
    each delivery (KafkaError.NO_ERROR when it was acknowledged)."""
    role = {"acks": "all", "enable.idempotence": idempotent, "message.timeout.ms": 15000}
    producer = Producer(client_config(common, role))
    codes: list[int] = []

    def report(err: KafkaError | None, _msg: object) -> None:
        codes.append(KafkaError.NO_ERROR if err is None else err.code())

    for value in values:
        producer.produce(TOPIC, key=b"acl-user", value=value, on_delivery=report)
    assert producer.flush(30) == 0
    return codes


def records_in_topic(broker: AclBroker, topic: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": f"127.0.0.1:{broker.port}", "group.id": "acl-test-reader"}
    )
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(3)
        )
    finally:
        consumer.close()


def test_only_the_producer_principal_writes_and_each_service_still_works(
    acl_broker: AclBroker, granted: dict[str, str], redis_url: str, redis_prefix: str
) -> None:
    producer = acl_broker.common("events-producer", granted["events-producer"])
    consumer = acl_broker.common("events-consumer", granted["events-consumer"])
    admin = acl_broker.common("events-admin", granted["events-admin"])
    good = make_record("acl-user")
    weird = make_record("acl-user", "WEIRD_TYPE")

    # The producer service's client (idempotent, acks=all) is allowed.
    assert deliveries(producer, [compact_json(good), compact_json(weird)], True) == [0, 0]
    # A raw writer with the consumer's or the admin's credentials is refused.
    refused = [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert deliveries(consumer, [b"raw"], False) == refused
    assert deliveries(admin, [b"raw"], False) == refused
    assert records_in_topic(acl_broker, TOPIC) == 2

    # The consumer's principal creates its dead-letter topic, reads in its group, stores
    # the event and dead-letters the record of an unknown type.
    settings = ConsumerSettings(
        common=consumer,
        consumer_group=GROUP,
        redis_prefix=redis_prefix,
        session_timeout_ms=6000,
        max_poll_interval_ms=30000,
        redis_timeout_seconds=1.0,
        dlq_flush_timeout_seconds=5.0,
    )
    assert ensure_dlq_topic(consumer, TOPIC, settings.dlq_topic, 3)
    store = RedisEventStore.from_url(redis_url, redis_prefix, settings.dedup_ttl_seconds)
    dlq = KafkaDeadLetterQueue(consumer, settings.dlq_topic, GROUP, 5.0)
    worker = WorkerThread(Worker(settings, store, dlq)).start()
    try:
        stats = wait_until(
            lambda: (s := store.stats())["processed"] + s["deadLettered"] == 2 and s,
            60,
            "the event stored and the odd record dead-lettered under the consumer's ACLs",
        )
        assert (stats["processed"], stats["deadLetteredByReason"]) == (
            1,
            {"unknown_event_type": 1},
        )
        assert store.get(good["eventId"]) is not None
    finally:
        assert worker.stop() == 0
        dlq.close()
        store.close()

    # The admin's principal reads the dead-letter topic with pipeline-admin.
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": admin.kafka_bootstrap_servers,
        "KAFKA_TOPIC": TOPIC,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "events-admin",
        "KAFKA_SASL_PASSWORD": granted["events-admin"],
    }
    out, err = io.StringIO(), io.StringIO()
    assert admin_main(["dlq", "summary"], env=env, out=out, err=err) == 0, err.getvalue()
    assert "unknown_event_type" in out.getvalue()

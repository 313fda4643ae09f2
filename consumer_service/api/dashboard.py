"""The live dashboard of one replica: `GET /dashboard`, a page that polls `GET /dashboard/data`.

Where each figure comes from (the page turns the two totals into per-second rates):

    events in       sum of the topic's partition high watermarks (Kafka)
    events out      the store's `processed` counter (Redis)
    lag             per partition: high watermark minus the group's committed offset
    members         describe_consumer_groups: each member's client id, host, partitions
    counters        duplicates skipped, dead-lettered by reason (the store's stats)
    Redis memory    INFO memory
    recent events   the newest stored events (consumer_service.api.dashboard_reads)

The Kafka figures cost five broker round trips, so each API process keeps them for
KAFKA_CACHE_SECONDS and fetches them for one request at a time: any number of open pages
and refreshes cost the broker at most one fetch per process per interval. Kafka's figures
carry the time they were taken (`kafka.sampledAt`), so a page differences high
watermarks over the right interval whichever process and cache answered.

Everything the page needs is package data in `consumer_service/api/static/`, served by this
blueprint: no CDN, no other origin (the Content-Security-Policy says so to the browser too).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from apispec import APISpec
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka import admin as kafka_admin
from confluent_kafka.admin import AdminClient
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from marshmallow import Schema, fields

from consumer_service.api.dashboard_reads import RedisDashboardReads
from consumer_service.api.schemas import StatsSchema
from consumer_service.config import ConsumerSettings
from consumer_service.storage import EventStore
from consumer_service.topics import metadata
from shared.errors import Unavailable
from shared.kafka import AuthenticationWatch, KafkaAuthenticationFailed, client_config

EXT = "consumer_service.api.dashboard"

KAFKA_TIMEOUT_SECONDS = 1.5
KAFKA_CACHE_SECONDS = 2.0
REDIS_TIMEOUT_SECONDS = 1.0
RECENT_EVENTS = 20
# How often the page asks for /dashboard/data (it says so in every answer).
POLL_SECONDS = 1.0

# The page and its assets come from this origin only; anything else the browser refuses
# (and reports on its console, which the browser tests watch).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}

# Plain value objects, shareable by every call. confluent-kafka's type hints do not
# export OffsetSpec, hence the ignores.
LATEST = kafka_admin.OffsetSpec.latest()  # type: ignore[attr-defined, no-untyped-call]
EARLIEST = kafka_admin.OffsetSpec.earliest()  # type: ignore[attr-defined, no-untyped-call]

dashboard_bp = Blueprint("dashboard", __name__)


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    high_watermark: int
    committed: int | None
    lag: int


@dataclass(frozen=True)
class GroupMember:
    client_id: str
    host: str
    partitions: tuple[int, ...]


@dataclass(frozen=True)
class KafkaSnapshot:
    """The topic and group as the broker saw them at `sampled_at` (Unix seconds); on
    failure only `error` and `sampled_at` are set."""

    sampled_at: float
    error: str | None = None
    produced: int | None = None
    group_state: str | None = None
    partitions: tuple[PartitionLag, ...] = ()
    members: tuple[GroupMember, ...] = ()


class KafkaGroupView:
    """The topic's watermarks and the group's offsets and members, cached.

    `snapshot()` never raises for Kafka trouble and blocks for at most about
    2 x KAFKA_TIMEOUT_SECONDS (plus the wait for another thread's fetch). A failed fetch
    is cached like a good one, so a broker that does not answer costs each page one
    timeout per interval, not one per request."""

    def __init__(
        self,
        settings: ConsumerSettings,
        timeout_seconds: float = KAFKA_TIMEOUT_SECONDS,
        cache_seconds: float = KAFKA_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._timeout = timeout_seconds
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        self._auth = AuthenticationWatch()
        self._cached: KafkaSnapshot | None = None
        self._cached_at = 0.0

    def snapshot(self) -> KafkaSnapshot:
        with self._lock:
            if self._cached is None or self._clock() - self._cached_at >= self._cache_seconds:
                self._cached = self._fetch()
                self._cached_at = self._clock()
            return self._cached

    def _client(self) -> AdminClient:
        if self._admin is None:
            # Created on first use: gunicorn forks its workers after importing the app.
            self._admin = AdminClient(
                client_config(self._settings.common, {"error_cb": self._auth})
            )
        return self._admin

    def _fetch(self) -> KafkaSnapshot:
        sampled_at = time.time()
        try:
            return self._ask(sampled_at)
        except KafkaAuthenticationFailed as exc:
            return KafkaSnapshot(sampled_at, error=str(exc))
        except (KafkaException, TimeoutError) as exc:
            return KafkaSnapshot(sampled_at, error=f"Kafka did not answer: {exc or 'timeout'}")

    def _ask(self, sampled_at: float) -> KafkaSnapshot:
        admin = self._client()
        topic = self._settings.common.kafka_topic
        group = self._settings.consumer_group
        t = self._timeout
        meta = metadata(admin, self._settings.common, self._auth, t, topic)
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            return KafkaSnapshot(sampled_at, error=f"topic {topic} is not available")
        tps = [TopicPartition(topic, p) for p in sorted(found.partitions)]
        # All four requested before any is awaited: they run side by side.
        latest = admin.list_offsets({tp: LATEST for tp in tps}, request_timeout=t)
        earliest = admin.list_offsets({tp: EARLIEST for tp in tps}, request_timeout=t)
        offsets = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, tps)], request_timeout=t
        )[group]
        described = admin.describe_consumer_groups([group], request_timeout=t)[group]
        wait = t + 0.5
        high = {tp.partition: int(f.result(timeout=wait).offset) for tp, f in latest.items()}
        low = {tp.partition: int(f.result(timeout=wait).offset) for tp, f in earliest.items()}
        committed: dict[int, int] = {
            tp.partition: int(tp.offset)
            for tp in offsets.result(timeout=wait).topic_partitions
            if tp.offset >= 0
        }
        description = described.result(timeout=wait)
        partitions = []
        for p in sorted(high):
            done = committed.get(p)
            # Records below the low watermark are gone: they can never be consumed.
            start = low.get(p, 0) if done is None else max(done, low.get(p, 0))
            partitions.append(PartitionLag(p, high[p], done, max(0, high[p] - start)))
        members = sorted(
            (
                GroupMember(
                    client_id=str(m.client_id),
                    host=str(m.host).lstrip("/"),
                    partitions=tuple(
                        sorted(
                            tp.partition
                            for tp in m.assignment.topic_partitions
                            if tp.topic == topic
                        )
                    ),
                )
                for m in description.members
            ),
            key=lambda m: (m.partitions[:1], m.client_id),
        )
        return KafkaSnapshot(
            sampled_at,
            produced=sum(high.values()),
            group_state=description.state.name.lower(),
            partitions=tuple(partitions),
            members=tuple(members),
        )


class DashboardState:
    """What the dashboard's views need, held in app.extensions[EXT]."""

    def __init__(self, settings: ConsumerSettings, store: EventStore) -> None:
        self.settings = settings
        self.store = store
        self.kafka = KafkaGroupView(settings)
        self._reads: RedisDashboardReads | None = None

    @property
    def reads(self) -> RedisDashboardReads:
        if self._reads is None:
            # Created on first use, like the AdminClient: after gunicorn's fork.
            s = self.settings
            self._reads = RedisDashboardReads.open(
                s, min(s.redis_timeout_seconds, REDIS_TIMEOUT_SECONDS)
            )
        return self._reads

    def close(self) -> None:
        """Closes the Redis connections (tests build many apps; gunicorn never calls it)."""
        if self._reads is not None:
            self._reads.close()


def init_app(app: Flask, settings: ConsumerSettings, store: EventStore) -> None:
    """Serve the dashboard from `app`, reading `store` and the Redis and Kafka of
    `settings`."""
    app.extensions[EXT] = DashboardState(settings, store)
    app.register_blueprint(dashboard_bp)


def state_of(app: Flask) -> DashboardState:
    state: DashboardState = app.extensions[EXT]
    return state


@functools.cache
def _static(name: str) -> bytes:
    # Read once per process: a few KiB, and a file handle per request would be handed to
    # whatever WSGI server to close.
    return (resources.files("consumer_service.api") / "static" / name).read_bytes()


def _serve(name: str, mimetype: str) -> Response:
    response = Response(_static(name), mimetype=mimetype)
    # Revalidated on every load (ETag): an upgraded replica's page never runs old code.
    response.headers["Cache-Control"] = "no-cache"
    response.add_etag()
    response.make_conditional(request)
    return response


@dashboard_bp.get("/dashboard")
def page() -> Response:
    response = _serve("dashboard.html", "text/html")
    response.headers["Content-Security-Policy"] = CSP
    return response


@dashboard_bp.get("/dashboard/dashboard.js")
def script() -> Response:
    return _asset("dashboard.js")


@dashboard_bp.get("/dashboard/dashboard.css")
def stylesheet() -> Response:
    return _asset("dashboard.css")


def _asset(name: str) -> Response:
    return _serve(name, ASSETS[name])


@dashboard_bp.get("/dashboard/data")
def data() -> Any:
    state = state_of(current_app)
    settings = state.settings
    body: dict[str, Any] = {
        "generatedAt": time.time(),
        "topic": settings.common.kafka_topic,
        "group": settings.consumer_group,
        "pollSeconds": POLL_SECONDS,
    }
    try:
        stats = state.store.stats()
        memory = state.reads.memory()
        recent = state.reads.newest(RECENT_EVENTS)
    except Unavailable as exc:
        body["stats"] = None
        body["redis"] = {"error": str(exc), "usedMemory": None, "maxMemory": None}
        body["recent"] = []
    else:
        body["stats"] = stats
        body["redis"] = {
            "error": None,
            "usedMemory": memory.used_bytes,
            "maxMemory": memory.max_bytes,
        }
        body["recent"] = recent
    kafka = state.kafka.snapshot()
    body["kafka"] = {
        "sampledAt": kafka.sampled_at,
        "error": kafka.error,
        "produced": kafka.produced,
        "groupState": kafka.group_state,
        "partitions": [
            {
                "partition": p.partition,
                "highWatermark": p.high_watermark,
                "committed": p.committed,
                "lag": p.lag,
            }
            for p in kafka.partitions
        ],
        "members": [
            {"clientId": m.client_id, "host": m.host, "partitions": list(m.partitions)}
            for m in kafka.members
        ],
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the OpenAPI part ------------------------------------------------------------------


class RecentEventSchema(Schema):
    eventId = fields.String(required=True)
    userId = fields.String(required=True)
    eventType = fields.String(required=True)
    timestamp = fields.String(required=True)
    processedAt = fields.String(required=True)
    partition = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class RedisFiguresSchema(Schema):
    error = fields.String(required=True, allow_none=True)
    usedMemory = fields.Integer(
        required=True, allow_none=True, metadata={"description": "INFO memory used_memory"}
    )
    maxMemory = fields.Integer(
        required=True, allow_none=True, metadata={"description": "0 when Redis has no limit"}
    )


class PartitionLagSchema(Schema):
    partition = fields.Integer(required=True)
    highWatermark = fields.Integer(required=True)
    committed = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: nothing committed yet"}
    )
    lag = fields.Integer(required=True)


class GroupMemberSchema(Schema):
    clientId = fields.String(required=True)
    host = fields.String(required=True)
    partitions = fields.List(fields.Integer(), required=True)


class KafkaFiguresSchema(Schema):
    sampledAt = fields.Float(
        required=True, metadata={"description": "Unix seconds when Kafka was asked"}
    )
    error = fields.String(required=True, allow_none=True)
    produced = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "Sum of the topic's high watermarks: records ever produced"},
    )
    groupState = fields.String(required=True, allow_none=True)
    partitions = fields.List(fields.Nested(PartitionLagSchema), required=True)
    members = fields.List(fields.Nested(GroupMemberSchema), required=True)


class DashboardDataSchema(Schema):
    generatedAt = fields.Float(required=True, metadata={"description": "Unix seconds"})
    topic = fields.String(required=True)
    group = fields.String(required=True)
    pollSeconds = fields.Float(required=True)
    stats = fields.Nested(StatsSchema, required=True, allow_none=True)
    redis = fields.Nested(RedisFiguresSchema, required=True)
    recent = fields.List(
        fields.Nested(RecentEventSchema),
        required=True,
        metadata={"description": f"The newest {RECENT_EVENTS} stored events, newest first"},
    )
    kafka = fields.Nested(KafkaFiguresSchema, required=True)


def document(spec: APISpec) -> None:
    """Adds the dashboard's routes to the read API's OpenAPI document."""
    spec.components.schema("DashboardData", schema=DashboardDataSchema)

    def text(description: str, mimetype: str) -> dict[str, Any]:
        return {"description": description, "content": {mimetype: {"schema": {"type": "string"}}}}

    spec.path(
        path="/dashboard",
        operations={
            "get": {
                "summary": "The live dashboard: an HTML page that polls /dashboard/data",
                "responses": {"200": text("The page", "text/html")},
            }
        },
    )
    for name, mimetype in ASSETS.items():
        spec.path(
            path=f"/dashboard/{name}",
            operations={
                "get": {
                    "summary": f"The dashboard's {name}",
                    "responses": {"200": text(name, mimetype)},
                }
            },
        )
    spec.path(
        path="/dashboard/data",
        operations={
            "get": {
                "summary": "What the dashboard shows, now",
                "description": (
                    "Always 200: a part whose source does not answer carries an `error` "
                    "(Redis: `stats` null and `recent` empty; Kafka: no partitions)."
                ),
                "responses": {
                    "200": {
                        "description": "Figures",
                        "content": {"application/json": {"schema": "DashboardData"}},
                    }
                },
            }
        },
    )

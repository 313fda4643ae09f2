"""Erasing a user's stored events on one Redis node: `DELETE /users/{userId}/events` and
`pipeline-admin user erase`, against the real Redis."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from consumer_service.admin.cli import main as admin_main
from consumer_service.api import create_app
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import PageQuery, RedisEventStore
from consumer_service.storage.erase import ERASE_PER_CALL, Position, erase_args
from shared.events import utc_timestamp

from .conftest import make_record

NOW = "2026-11-24T05:00:00.000Z"
KEYS = ("eraser events:erase", "reader events:read")
ERASER = {"X-API-Key": "eraser"}
READER = {"X-API-Key": "reader"}


@pytest.fixture
def store(settings: ConsumerSettings, make_store: Callable[..., RedisEventStore]) -> Any:
    return make_store(settings)


@pytest.fixture
def client(settings: ConsumerSettings, store: RedisEventStore) -> FlaskClient:
    return create_app(replace(settings, api_keys=KEYS), store).test_client()


def store_events(store: RedisEventStore, users: list[str], start: int = 0) -> list[Accepted]:
    types = ("LOGIN", "LOGOUT", "PRODUCT_VIEW")
    events = [
        Accepted(make_record(user, types[n % 3], payload={"n": n}), n % 6, start + n)
        for n, user in enumerate(users)
    ]
    store.store_batch(events, NOW)
    return events


def ids_of(client: FlaskClient, query: str = "") -> list[str]:
    body = client.get(f"/events/processed?limit=1000{query}", headers=READER).get_json()
    return [e["eventId"] for e in body["events"]]


def test_a_users_events_go_with_their_index_entries(
    client: FlaskClient, store: RedisEventStore
) -> None:
    events = store_events(store, ["ann", "bob", "ann", "cat", "ann", "bob"])
    kept = [e.event_id for e in events if e.record["userId"] != "ann"]
    answer = client.delete("/users/ann/events", headers=ERASER)
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["userId"], body["deleted"]) == ("ann", 3)
    assert utc_timestamp() >= body["erasedThrough"] >= NOW

    assert ids_of(client) == kept
    assert ids_of(client, "&userId=ann") == []
    for event_type in ("LOGIN", "LOGOUT", "PRODUCT_VIEW"):
        listed = ids_of(client, f"&eventType={event_type}")
        assert set(listed) <= set(kept)
    for event in events:
        found = client.get(f"/events/processed/{event.event_id}", headers=READER)
        assert found.status_code == (200 if event.event_id in kept else 404)
    stats = client.get("/stats", headers=READER).get_json()
    assert stats["stored"] == 3
    # The time index lost the same entries as the index: the two stay in step, as the
    # read API's time windows rely on.
    for run, keys in store.layouts():
        index = run(lambda r, keys=keys: r.zrange(keys.index, 0, -1))
        times = run(lambda r, keys=keys: r.zrange(keys.time, 0, -1))
        assert sorted(index) == sorted(times) == sorted(e.encode() for e in kept)
    # Again: nothing left to delete.
    assert client.delete("/users/ann/events", headers=ERASER).get_json()["deleted"] == 0


def test_a_redelivery_of_an_erased_event_is_not_stored_again(
    client: FlaskClient, store: RedisEventStore
) -> None:
    events = store_events(store, ["ann", "ann"])
    client.delete("/users/ann/events", headers=ERASER)
    again = store.store_batch(events, NOW)
    assert (again.stored, again.redelivered, again.erased) == ((), (), tuple(events))
    assert ids_of(client, "&userId=ann") == []
    assert client.get("/stats", headers=READER).get_json()["erasedDropped"] == 2
    # A new event of the user is stored as usual.
    new = Accepted(make_record("ann", timestamp=later(utc_timestamp())), 0, 100)
    assert store.store_batch([new], NOW).stored == (new,)
    assert ids_of(client, "&userId=ann") == [new.event_id]


def test_a_user_with_more_events_than_one_step(client: FlaskClient, store: RedisEventStore) -> None:
    many = ERASE_PER_CALL * 2 + 7
    store_events(store, ["ann"] * many + ["bob"])
    assert client.delete("/users/ann/events", headers=ERASER).get_json()["deleted"] == many
    assert client.get("/stats", headers=READER).get_json()["stored"] == 1


@pytest.mark.parametrize(
    "user", ["a/b", "//x/", "line\nbreak", "ü ser 🚀", "x" * 128, "*", "ann:event:x"]
)
def test_any_valid_user_id(client: FlaskClient, store: RedisEventStore, user: str) -> None:
    store_events(store, [user, "bob"])
    answer = client.delete(f"/users/{quote(user, safe='')}/events", headers=ERASER)
    assert (answer.get_json()["userId"], answer.get_json()["deleted"]) == (user, 1)
    assert client.get("/stats", headers=READER).get_json()["stored"] == 1


def test_the_answers_of_the_erase_route(client: FlaskClient) -> None:
    too_long = client.delete(f"/users/{'x' * 129}/events", headers=ERASER)
    assert too_long.status_code == 400
    assert too_long.get_json()["error"]["type"] == "invalid_user_id"
    assert client.delete("/users/ann/events").status_code == 401
    assert client.delete("/users/ann/events", headers=READER).status_code == 403
    assert client.get("/users/ann/events", headers=ERASER).status_code == 405


def admin(settings: ConsumerSettings, *argv: str) -> tuple[int, str, str]:
    env = {
        "REDIS_URL": settings.common.redis_url,
        "CONSUMER_REDIS_PREFIX": settings.redis_prefix,
        "CONSUMER_REDIS_MODE": "single",
    }
    out, err = io.StringIO(), io.StringIO()
    code = admin_main(list(argv), env=env, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_pipeline_admin_user_erase(
    settings: ConsumerSettings, store: RedisEventStore, client: FlaskClient
) -> None:
    store_events(store, ["ann", "bob", "ann"])
    code, out, _ = admin(settings, "user", "erase", "ann")
    assert code == 0
    answer = json.loads(out)
    assert (answer["userId"], answer["deleted"]) == ("ann", 2)
    assert answer["erasedThrough"] <= utc_timestamp()
    assert ids_of(client, "&userId=ann") == []
    assert admin(settings, "user", "erase", "x" * 129)[0] == 2
    assert admin(settings, "user", "erase", "")[0] == 2
    unreachable = replace(
        settings, common=replace(settings.common, redis_url="redis://127.0.0.1:1/0")
    )
    code, _, err = admin(unreachable, "user", "erase", "ann")
    assert code == 1 and "Redis" in err


def at_ms(ms: int) -> str:
    """The timestamp of the instant `ms` (ms since the epoch)."""
    return utc_timestamp(datetime.fromtimestamp(ms / 1000, UTC))


def later(timestamp: str, ms: int = 1000) -> str:
    when = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%f%z")
    return utc_timestamp(when + timedelta(milliseconds=ms))


def test_before_the_erasure_means_a_timestamp_at_or_before_its_cutoff(
    store: RedisEventStore,
) -> None:
    erasure = store.erase_user("ann")
    cutoff = erasure.cutoff_ms
    assert erasure.erased_through == at_ms(cutoff)
    # Just before, the same millisecond, just after; and bob, never erased, at the cutoff.
    times = [cutoff - 1, cutoff, cutoff + 1]
    events = [Accepted(make_record("ann", timestamp=at_ms(t)), 0, n) for n, t in enumerate(times)]
    bob = Accepted(make_record("bob", timestamp=at_ms(cutoff)), 0, 9)
    result = store.store_batch([*events, bob], NOW)
    assert result.erased == tuple(events[:2])
    assert result.stored == (events[2], bob)
    # A retry of the batch: the erased stay erased, the stored are redelivered.
    again = store.store_batch([*events, bob], NOW)
    assert (again.erased, again.redelivered) == (tuple(events[:2]), (events[2], bob))
    assert store.stats()["erasedDropped"] == 4


def test_an_erasure_record_lives_its_ttl_and_erasing_again_moves_it_forward(
    settings: ConsumerSettings, make_store: Callable[..., RedisEventStore], redis_url: str
) -> None:
    store = RedisEventStore.from_url(
        redis_url, settings.redis_prefix, 3600, erasure_ttl_seconds=7200
    )
    try:
        first = store.erase_user("ann")
        run, keys = store.layouts()[0]
        assert 7190 < run(lambda r: r.ttl(keys.erased("ann"))) <= 7200
        time.sleep(0.01)
        second = store.erase_user("ann")
        assert second.cutoff_ms > first.cutoff_ms
        assert int(run(lambda r: r.get(keys.erased("ann")))) == second.cutoff_ms
        # Only erased users have a record.
        assert run(lambda r: r.exists(keys.erased("bob"))) == 0
    finally:
        store.close()


def test_an_event_stored_between_two_erase_steps_stays(store: RedisEventStore) -> None:
    many = ERASE_PER_CALL + 5
    store_events(store, ["ann"] * many)
    run, _ = store.layouts()[0]

    def step(position: Position) -> list[int]:
        args = erase_args(store._prefix, "ann", position, 60)
        return [int(n) for n in run(lambda r: store._erase(keys=[], args=args))]

    erased, left, cutoff, upto, after = step((None, None, None))
    assert (erased, left) == (ERASE_PER_CALL, 5)
    # Stored between the steps: a later event of the user (an earlier one is dropped).
    later_one = Accepted(make_record("ann", timestamp=at_ms(cutoff + 1)), 0, 900)
    earlier = Accepted(make_record("ann", timestamp=at_ms(cutoff)), 0, 901)
    result = store.store_batch([later_one, earlier], NOW)
    assert (result.stored, result.erased) == ((later_one,), (earlier,))
    assert step((cutoff, upto, after))[:2] == [5, 0]
    assert [e["eventId"] for e in store.page(PageQuery(user_id="ann")).events] == [
        later_one.event_id
    ]
    # A later event stored BEFORE an erasure stays too: the timestamp decides. (Erasing
    # again takes a new cutoff, past `later_one`.)
    ahead = Accepted(make_record("ann", timestamp=at_ms(cutoff + 60_000)), 0, 902)
    store.store_batch([ahead], NOW)
    assert store.erase_user("ann").deleted == 1
    ids = [e["eventId"] for e in store.page(PageQuery(user_id="ann")).events]
    assert ids == [ahead.event_id]

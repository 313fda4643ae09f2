"""The store's Redis key names and its script's shipped text: what is already in a
running Redis must keep being found under the same names."""

from __future__ import annotations

import pytest

from consumer_service.storage.erase import Erasure
from consumer_service.storage.keys import ClusterKeyLayout, KeyLayout
from consumer_service.storage.script import STORE_BATCH_LUA


def test_single_node_key_names() -> None:
    keys = KeyLayout("ua")
    assert keys.seen("e1") == "ua:seen:e1"
    assert keys.event("e1") == "ua:event:e1"
    assert keys.user("u1") == "ua:user:u1"
    assert keys.event_type("LOGIN") == "ua:type:LOGIN"
    assert keys.writer("w1") == "ua:writer:w1"
    assert keys.erased("u1") == "ua:erased:u1"
    assert (keys.seq, keys.index, keys.stats, keys.pattern) == (
        "ua:seq",
        "ua:index",
        "ua:stats",
        "ua:*",
    )


@pytest.mark.parametrize(
    ("user_id", "event_type", "index"),
    [("u1", "LOGIN", "ua:user:u1"), (None, "LOGIN", "ua:type:LOGIN"), (None, None, "ua:index")],
)
def test_a_filtered_read_walks_the_narrowest_index(
    user_id: str | None, event_type: str | None, index: str
) -> None:
    assert KeyLayout("ua").index_for(user_id, event_type) == index


def test_cluster_key_names_keep_each_atomic_step_in_one_slot() -> None:
    keys = ClusterKeyLayout("ua")
    assert keys.partition(3).index == "{ua:p3}:index"
    assert keys.partition(3).event("e1") == "{ua:p3}:event:e1"
    # The store script reads the erasure record in the slot of the partition it writes.
    assert keys.partition(3).erased("u1") == "{ua:p3}:erased:u1"
    assert keys.claim("e1") == "ua:claim:{e1}"
    assert keys.partitions == "{ua:meta}:partitions"
    assert keys.meta_stats == "{ua:meta}:stats"
    assert keys.patterns == ("{ua:*", "ua:*")


def test_the_script_ships_with_the_package_and_keeps_its_flags_line() -> None:
    # `#!lua` must stay the first line: Redis reads the script's flags from it.
    assert STORE_BATCH_LUA.startswith("#!lua\n")
    assert "local DUPLICATE, REDELIVERED, ERASED, FENCED = 0, -1, -2, 'FENCED'" in STORE_BATCH_LUA


def test_an_erasure_cutoff_reads_as_a_timestamp_of_the_events_own_format() -> None:
    assert Erasure(0, 1_796_424_046_862).erased_through == "2026-12-04T22:40:46.862Z"
    assert Erasure(0, 0).erased_through == "1970-01-01T00:00:00.000Z"

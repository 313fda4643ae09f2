"""The store's Redis key layout: every key name is built here (and, the same way, by
store_batch.lua and erase_user.lua from the prefix they are given). Readers outside the
store (the dashboard, the benchmarks) ask this module for names instead of spelling them.

Single node, under one prefix P (default `ua`):

    P:seen:<eventId>   string "<partition>:<offset>" of the first copy, EX dedup TTL;
                       written last, so a mark means the event was fully stored
    P:event:<eventId>  string, the stored form (StoredEventSchema) as compact JSON
    P:seq              string counter; each stored event takes the next value
    P:index            zset eventId -> seq: every stored event in processing order
    P:user:<userId>    zset eventId -> seq: one user's events
    P:type:<eventType> zset eventId -> seq: one event type's events
    P:time             zset eventId -> the event's timestamp in ms (timeindex.py): the
                       events of P:index by event time, for the read API's time window.
                       Entered and removed with P:index, so while both hold as many
                       entries they hold the same events (an older release kept none:
                       time_backfill.py brings such a store in step)
    P:stats            hash processed, duplicates, erased, deadLettered,
                       deadLettered:<reason>, type:<eventType>
    P:writer:<writer>  string, the number of the writer's last stored batch (a chain)
    P:erased:<userId>  string, the cutoff of the user's erasure in ms since the epoch
                       (erase_user.lua): no event of the user with a timestamp at or
                       before it is stored again; EX the erasure TTL

The sequence number is both the processing order and the read API's paging cursor.

Payload encryption (shared/payload_crypto.py), the same names on one node and on a
Redis Cluster, where the braces give each its own slot; the producer writes them too:

    P:datakey:{<userId>}  string, the user's data key wrapped by a master key; deleted
                          by an erasure, which leaves the user's payloads unreadable
    P:datakey-erasures    string counter, incremented by each erasure that deleted a
                          data key: processes empty their cache of data keys when it moves
    P:keycheck:{<keyId>}  string, a value wrapped by master key <keyId>, for the start-up
                          check that every service holds the same key under that id

Redis Cluster (docs/scaling.md), every atomic step inside one hash slot:

    {P:p<n>}:...          partition n's keys: the single-node layout above under the
                          prefix `{P:p<n>}`, written by the same script
    P:claim:{<eventId>}   "<partition>:<offset>" of the record owning the eventId, SET NX
    {P:meta}:partitions   set of partitions that have data (registered before the data)
    {P:meta}:stats        hash: deadLettered, deadLettered:<reason>, duplicates (claims)
"""

from __future__ import annotations

from dataclasses import dataclass


def data_key(prefix: str, user_id: str) -> str:
    """The name of `user_id`'s data key under the store prefix `prefix`."""
    return f"{prefix}:datakey:{{{user_id}}}"


def data_key_erasures(prefix: str) -> str:
    """The name of the counter of data keys erased under the store prefix `prefix`."""
    return f"{prefix}:datakey-erasures"


def key_check(prefix: str, key_id: str) -> str:
    """The name of master key `key_id`'s check value under the store prefix `prefix`."""
    return f"{prefix}:keycheck:{{{key_id}}}"


@dataclass(frozen=True)
class KeyLayout:
    """The single-node layout under `prefix` (on a cluster: one partition's tag)."""

    prefix: str

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def seen(self, event_id: str) -> str:
        return self._key("seen", event_id)

    def event(self, event_id: str) -> str:
        return self._key("event", event_id)

    def user(self, user_id: str) -> str:
        return self._key("user", user_id)

    def event_type(self, event_type: str) -> str:
        return self._key("type", event_type)

    def writer(self, writer: str) -> str:
        return self._key("writer", writer)

    def erased(self, user_id: str) -> str:
        return self._key("erased", user_id)

    @property
    def seq(self) -> str:
        return self._key("seq")

    @property
    def index(self) -> str:
        return self._key("index")

    @property
    def stats(self) -> str:
        return self._key("stats")

    @property
    def time(self) -> str:
        return self._key("time")

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of the layout."""
        return self._key("*")

    def index_for(self, user_id: str | None, event_type: str | None) -> str:
        """The index a filtered read walks: the user's when given, else the event type's
        when given, else the whole index."""
        if user_id is not None:
            return self.user(user_id)
        if event_type is not None:
            return self.event_type(event_type)
        return self.index


@dataclass(frozen=True)
class ClusterKeyLayout:
    """The Redis Cluster layout under `prefix`."""

    prefix: str

    def partition(self, partition: int) -> KeyLayout:
        """Partition `partition`'s keys: the single-node layout under its hash tag."""
        return KeyLayout(f"{{{self.prefix}:p{partition}}}")

    def claim(self, event_id: str) -> str:
        return f"{self.prefix}:claim:{{{event_id}}}"

    @property
    def partitions(self) -> str:
        return f"{{{self.prefix}:meta}}:partitions"

    @property
    def meta_stats(self) -> str:
        return f"{{{self.prefix}:meta}}:stats"

    @property
    def patterns(self) -> tuple[str, ...]:
        """SCAN patterns that together match every key of the layout (on each master)."""
        return (f"{{{self.prefix}:*", f"{self.prefix}:*")

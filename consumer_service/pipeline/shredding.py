"""The worker's step for encrypted payloads (crypto-shredding, docs/personal-data.md):
each accepted record's sealed payload is opened with its user's data key before the
batch is stored.

* The user has no data key, or another one than the record was sealed under: the user
  was erased after the record was produced. The record is dropped and counted
  (`consumer_erased_dropped_total`), neither stored nor dead-lettered: it cannot be read
  by anyone any more, so a DLQ copy or a retry would only keep ciphertext around.
* The key or the payload does not open (a master key id not configured here, another key
  under a known id, altered bytes): dead-lettered as `undecryptable`, with the reason.
  Not counted by the poison guard: every record of a deployment with a wrong key would
  trip it, and the worker would stop and restart over and over; the start-up check
  (`check_master_keys`) catches a wrong key before any record does.

What is stored is the record as it came, ciphertext included: Redis, its AOF and its
backups hold no plaintext payload, and an erasure shreds them too. The read API opens
payloads as it answers.
"""

from __future__ import annotations

import logging
from typing import Any

from consumer_service import metrics
from consumer_service.config import ConsumerSettings
from consumer_service.pipeline.batch import Batch
from consumer_service.pipeline.dlq import DeadLetter
from consumer_service.pipeline.processing import Accepted
from consumer_service.storage import redis_mode
from consumer_service.storage.deployment_keys import (
    check_deployment_keys,
    deployment_keys,
    redis_client,
)
from shared.data_keys import DataKeys
from shared.errors import Unavailable
from shared.events import event_key, record_headers
from shared.json_codec import compact_json
from shared.payload_crypto import DataKey, Envelope, PayloadKeyError, envelope_of, open_payload

log = logging.getLogger(__name__)

UNDECRYPTABLE = "undecryptable"


def key_client(settings: ConsumerSettings) -> Any:
    """A client of REDIS_URL for the data keys: a cluster client when the store is one."""
    timeout = settings.redis_timeout_seconds
    try:
        cluster = redis_mode(settings, timeout) == "cluster"
    except Unavailable:  # open_store guesses a single node likewise
        cluster = False
    return redis_client(settings.common.redis_url, timeout, cluster=cluster)


def data_keys(settings: ConsumerSettings, client: Any) -> DataKeys:
    """The consumer's `DataKeys` (read only), under CONSUMER_REDIS_PREFIX."""
    return deployment_keys(client, settings.encryption, settings.redis_prefix)


def self_check(settings: ConsumerSettings) -> bool:
    """The start-up check of the master keys (`check_master_keys`, logged): False when a
    key differs from the one the deployment stored under its id (the consumer must not
    start); True when they agree, or Redis does not answer yet (records then wait for
    it)."""
    try:
        check_deployment_keys(key_client(settings), settings.encryption, settings.redis_prefix)
    except Unavailable as exc:
        log.warning("master keys not checked: Redis did not answer", extra={"error": str(exc)})
    except PayloadKeyError as exc:
        log.error("payload encryption keys refused", extra={"error": str(exc)})
        return False
    return True


class PayloadScreen:
    """Opens the sealed payloads of a batch (see the module's docstring)."""

    def __init__(self, keys: DataKeys) -> None:
        self._keys = keys

    def screen(self, batch: Batch, topic: str) -> int:
        """Drop `batch`'s records of erased users and move those that do not open to its
        dead letters; the number dropped as erased. Plain payloads pass untouched. Raises
        `Unavailable` when Redis does not answer (the batch is then unchanged)."""
        sealed: list[tuple[Accepted, Envelope]] = []
        # By identity: the records of this batch, alive for this call.
        refused: dict[int, str] = {}
        for accepted in batch.accepted:
            try:
                envelope = envelope_of(accepted.record["payload"])
            except PayloadKeyError as exc:
                refused[id(accepted)] = str(exc)
                continue
            if envelope is not None:
                sealed.append((accepted, envelope))
        if not sealed and not refused:
            return 0
        keys = self._keys.for_reading({event_key(a.record) for a, _ in sealed})
        erased: set[int] = set()
        for accepted, envelope in sealed:
            record = accepted.record
            key = keys[event_key(record)]
            if isinstance(key, PayloadKeyError):
                refused[id(accepted)] = str(key)
            elif key is None or key.id != envelope.key_id:
                erased.add(id(accepted))
            else:
                problem = _open(key, record, envelope)
                if problem is not None:
                    refused[id(accepted)] = problem
        kept: list[Accepted] = []
        for accepted in batch.accepted:
            problem = refused.get(id(accepted))
            if problem is not None:
                batch.letters.append(_letter(accepted, problem, topic))
            elif id(accepted) not in erased:
                kept.append(accepted)
        batch.accepted = kept
        if erased:
            metrics.ERASED_DROPPED.inc(len(erased))
            log.info("records of erased users dropped", extra={"records": len(erased)})
        return len(erased)


def _open(key: DataKey, record: dict[str, Any], envelope: Envelope) -> str | None:
    try:
        open_payload(key, event_key(record), record["eventId"], envelope)
    except PayloadKeyError as exc:
        return str(exc)
    return None


def _letter(accepted: Accepted, problem: str, topic: str) -> DeadLetter:
    """The dead letter of an accepted record whose payload does not open: the record as
    decoded (the same JSON, compactly written) with the producer's headers."""
    record = accepted.record
    return DeadLetter(
        key=event_key(record).encode("utf-8", "surrogatepass"),
        value=compact_json(record) if accepted.encoded is None else accepted.encoded,
        headers=tuple(record_headers(record)),
        reason=UNDECRYPTABLE,
        message=f"The payload cannot be decrypted: {problem}",
        topic=topic,
        partition=accepted.partition,
        offset=accepted.offset,
    )

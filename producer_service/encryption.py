"""Payload encryption on intake: `EncryptingPublisher` seals every record's payload
before it reaches Kafka (shared/payload_crypto.py says how, docs/personal-data.md why).

It wraps the publisher, the one place every intake path hands its records to (the fast
path, the Flask views, any later intake), so none of them can publish a plain payload
while encryption is on. The callers keep answering with the plaintext record they built:
the client sees its own event as it sent it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from consumer_service.storage.connect import is_cluster
from consumer_service.storage.deployment_keys import (
    check_deployment_keys,
    deployment_keys,
    redis_client,
)
from producer_service.config import ProducerSettings
from producer_service.delivery import Delivery
from producer_service.publisher import EventPublisher, Readiness
from shared.data_keys import DataKeys
from shared.errors import InvalidEvent, Unavailable
from shared.events import event_key
from shared.json_codec import compact_json
from shared.payload_crypto import PayloadKeyError, seal

logger = logging.getLogger(__name__)

# Redis answers a data-key read within this, or the request answers 503.
REDIS_TIMEOUT_SECONDS = 2.0


def key_client(url: str, timeout_seconds: float = REDIS_TIMEOUT_SECONDS) -> Any:
    """A client of the Redis at `url` for the data keys: a cluster client when that node
    says it runs in cluster mode; a single-node client when it says otherwise or does not
    answer yet (logged; as the consumer's store guesses)."""
    try:
        cluster = is_cluster(url, timeout_seconds)
    except Unavailable as exc:
        logger.warning(
            "Redis did not answer whether it is a cluster; using a single-node client for "
            "the data keys",
            extra={"error": str(exc)},
        )
        cluster = False
    return redis_client(url, timeout_seconds, cluster=cluster)


def data_keys_for(settings: ProducerSettings, client: Any) -> DataKeys:
    """The producer's `DataKeys`, under the consumers' prefix."""
    return deployment_keys(client, settings.encryption, settings.redis_prefix)


def self_check(settings: ProducerSettings) -> str | None:
    """The start-up check of the master keys (`check_master_keys`): None when they agree
    with the deployment's or Redis does not answer yet (logged; requests then answer 503
    until it does), else the problem, for an exit with status 2."""
    if not settings.encryption.enabled:
        return None
    url = settings.rate_limit_redis_url
    assert url is not None  # the settings require REDIS_URL with encryption on
    try:
        check_deployment_keys(key_client(url), settings.encryption, settings.redis_prefix)
    except Unavailable as exc:
        logger.warning("master keys not checked: Redis did not answer", extra={"error": str(exc)})
    except PayloadKeyError as exc:
        return str(exc)
    return None


class EncryptingPublisher:
    """An `EventPublisher` that publishes each record through `inner` with its payload
    replaced by the envelope sealed under its user's data key. Raises `Unavailable` when
    Redis does not answer for the keys, or a user's stored key does not open with the
    master keys (logged: an operator must fix the keys); nothing is sent then."""

    def __init__(self, inner: EventPublisher, keys: DataKeys) -> None:
        self._inner = inner
        self._keys = keys

    def publish(
        self,
        records: Sequence[Mapping[str, Any]],
        timeout: float,
        values: Sequence[bytes] | None = None,
    ) -> list[Delivery]:
        # `values` are the plaintext encodings: the sealed records are encoded anew.
        try:
            keys = self._keys.for_writing({event_key(r) for r in records})
        except PayloadKeyError as exc:
            logger.error("a user's data key does not open", extra={"error": str(exc)})
            raise Unavailable(f"the payload data key cannot be used: {exc}") from None
        sealed = []
        for index, record in enumerate(records):
            try:
                plain = compact_json(record["payload"])
            except (ValueError, RecursionError):
                raise InvalidEvent(
                    f"Event {index} cannot be written to Kafka; nothing was published."
                ) from None
            user_id = event_key(record)
            envelope = seal(keys[user_id], user_id, record["eventId"], plain)
            sealed.append({**record, "payload": envelope})
        return self._inner.publish(sealed, timeout)

    def ready(self, timeout: float) -> Readiness:
        return self._inner.ready(timeout)

    def close(self, timeout: float) -> int:
        return self._inner.close(timeout)

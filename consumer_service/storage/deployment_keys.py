"""The deployment's payload data keys (shared/data_keys.py) as every service opens them:
under the store prefix (keys.py names them), on one node or on a Redis Cluster. The
producer seals with them and the consumer opens with them, so both set them up here."""

from __future__ import annotations

import functools
from typing import Any

import redis

from consumer_service.storage.keys import data_key, data_key_erasures, key_check
from shared.config import EncryptionSettings
from shared.data_keys import DataKeys, check_master_keys


def redis_client(url: str, timeout_seconds: float, *, cluster: bool) -> Any:
    """A client of the Redis at `url` whose calls give up after `timeout_seconds`."""
    options = {"socket_timeout": timeout_seconds, "socket_connect_timeout": timeout_seconds}
    if cluster:
        return redis.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def deployment_keys(client: Any, encryption: EncryptionSettings, prefix: str) -> DataKeys:
    """The data keys under the store prefix `prefix`, cached as `encryption` says."""
    return DataKeys(
        client,
        encryption.master_keys(),
        functools.partial(data_key, prefix),
        data_key_erasures(prefix),
        cache_size=encryption.payload_key_cache_size,
        cache_seconds=encryption.payload_key_cache_seconds,
    )


def check_deployment_keys(client: Any, encryption: EncryptionSettings, prefix: str) -> None:
    """`check_master_keys` for the master keys of `encryption` under `prefix`: raises
    `PayloadKeyError` when one differs from the deployment's, `Unavailable` when Redis
    does not answer."""
    check_master_keys(client, encryption.master_keys(), functools.partial(key_check, prefix))

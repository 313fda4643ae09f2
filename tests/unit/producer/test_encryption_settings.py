"""The producer's settings for payload encryption."""

from __future__ import annotations

import base64
import os

import pytest

from producer_service.config import ProducerSettings
from shared.config import EncryptionSettings
from shared.errors import ConfigError


def test_the_producer_refuses_encryption_without_redis() -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    on = EncryptionSettings(payload_encryption_keys=f"k1:{key}")
    with pytest.raises(ConfigError, match="PAYLOAD_ENCRYPTION_KEYS needs REDIS_URL"):
        ProducerSettings(encryption=on)
    with_redis = ProducerSettings(encryption=on, rate_limit_redis_url="redis://h:6379/0")
    assert with_redis.encryption.enabled
    assert key not in repr(with_redis)

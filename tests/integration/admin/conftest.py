"""The consumer tests' fixtures (settings pointed at this test's own topic, group and key
prefix; workers in threads), so a DLQ can also be filled by a real Worker."""

from tests.integration.consumer.conftest import (  # noqa: F401
    make_store,
    settings,
    start_worker,
)

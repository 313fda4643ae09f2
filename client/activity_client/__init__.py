"""Python client for the user-activity pipeline: `EventClient` batches events to the
producer's `/events/batch`, retries without duplicates, and can spool to disk so that
not even a crash of the calling process loses an event."""

from activity_client.client import Counters, EventClient
from activity_client.errors import ActivityClientError, ClientClosed, SpoolError
from activity_client.retry import Backoff

__all__ = [
    "ActivityClientError",
    "Backoff",
    "ClientClosed",
    "Counters",
    "EventClient",
    "SpoolError",
]

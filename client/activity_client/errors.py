"""The client's exceptions: one root, so a caller can catch everything it raises."""

from __future__ import annotations


class ActivityClientError(Exception):
    """Root of every exception this package raises."""


class ClientClosed(ActivityClientError):
    """`track()` after `close()`: the event was not accepted."""


class SpoolError(ActivityClientError):
    """The spool cannot take the event durably (disk full, file unwritable, in use by
    another process): `track()` raises it and the event was not accepted."""

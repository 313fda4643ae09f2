"""The credential check of the `/events` routes: `events:write`, from an API key of
PRODUCER_API_KEYS or a bearer JWT (shared.auth holds the rules, shared.web the answers).

The events blueprint runs `require_api_key` before each of its requests; the quota then
charges the principal it let in (`shared.web.principal`).
"""

from __future__ import annotations

from shared import web
from shared.auth import WRITE


def require_api_key() -> None:
    """Raise `Unauthenticated` (401) unless the request presents a valid API key or JWT,
    `Forbidden` (403) when it does not grant `events:write`; let every request through
    when neither keys nor a JWT key are configured. (Named when keys were the only
    credential.)"""
    web.authorize(WRITE)

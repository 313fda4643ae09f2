"""The API-key check of the `/events` routes (PRODUCER_API_KEYS).

The events blueprint runs `require_api_key` before each of its requests; the quota asks
`presented_key` whom a request belongs to.
"""

from __future__ import annotations

import hmac

from flask import request
from werkzeug.exceptions import Unauthorized

from producer_service.state import state


def presented_key() -> str | None:
    """The API key the request presents: X-API-Key, else an `Authorization: Bearer` token."""
    given = request.headers.get("X-API-Key")
    if given is None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
    return given


def require_api_key() -> None:
    """Raise `Unauthorized` (401) unless the request presents one of the app's API keys;
    let every request through when none is configured."""
    keys = state().api_keys
    if not keys:
        return
    given = presented_key()
    # Compare against every key so the time taken does not reveal which one matched.
    candidate = (given or "").encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    if not given or not matched:
        raise Unauthorized("A valid API key is required (X-API-Key header).")

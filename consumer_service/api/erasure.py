"""The erasure blueprint: `DELETE /users/<userId>/events` deletes every stored event of
one user (scope `events:erase` when the API has credentials configured)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter

from consumer_service.api.events import state
from shared.auth import ERASE
from shared.event_rules import USER_ID_MAX
from shared.web import error_response, scope_guard

bp = Blueprint("erasure", __name__)
bp.before_request(scope_guard(ERASE))


class AnyText(PathConverter):
    """Any non-empty text: a userId may hold `/` (sent as is or as %2F), line breaks,
    anything."""

    regex = "(?s:.+?)"
    # Said outright: werkzeug guesses it from a `/` in the regex.
    part_isolating = False


@bp.record_once
def _add_converter(setup: BlueprintSetupState) -> None:
    setup.app.url_map.converters.setdefault("any_text", AnyText)


# merge_slashes off: `//` inside a userId is part of it, not a typo to redirect.
@bp.delete("/users/<any_text:user_id>/events", merge_slashes=False)
def erase_user(user_id: str) -> Response:
    """200 with how many stored events of the user were deleted (0 for a user with none)
    and the erasure's cutoff; 400 for a userId no event can have."""
    if len(user_id) > USER_ID_MAX:
        return error_response(400, "invalid_user_id", f"userId must be 1-{USER_ID_MAX} characters.")
    erasure = state().store.erase_user(user_id)
    return jsonify(
        {
            "userId": user_id,
            "deleted": erasure.deleted,
            "erasedThrough": erasure.erased_through,
        }
    )

"""Built-in fallbacks: the pending marker (a signal receiver), the flash on the next page
request, and the claim behind the polling endpoint.

A host adds its own fallback by connecting to :data:`..signals.notification_fallback`.
"""

from __future__ import annotations

from typing import Any

from flask import after_this_request, flash, request, session

try:  # a dependency; guarded only so that a host without it still gets the rest
    from flask_login import user_logged_out
except ImportError:  # pragma: no cover
    user_logged_out = None

from .. import signals
from ..access import current_user_id
from . import ack_outbox
from .flashes import flash_id, flash_message, on_logout, remember_claimed, settle_response


def connect_receivers(app: Any, ext_state: Any) -> None:
    """Connect the built-in receivers for ``app`` (kept alive by ``ext_state``)."""

    def mark_pending(sender: Any, notification: dict[str, Any], reason: str, marked: bool = False,
                     **_: Any) -> None:
        if not marked:  # ``send_many`` sets a whole batch's markers in one call first
            ext_state.state.mark_pending(str(notification["user_id"]))

    ext_state.receivers.append(mark_pending)
    signals.notification_fallback.connect(mark_pending, sender=app, weak=False)

    if user_logged_out is None:  # pragma: no cover
        return

    def logged_out(sender: Any, user: Any = None, **_: Any) -> None:
        on_logout(ext_state, user)

    ext_state.receivers.append(logged_out)
    user_logged_out.connect(logged_out, sender=app, weak=False)


def claim_for_user(ext_state: Any, user_id: str, limit: int, channel: str,
                   exclude: set[int] | None = None) -> list[dict[str, Any]]:
    """Offer up to ``limit`` pending rows of a user by ``channel``, keeping the pending marker
    right. The rows are delivered when the browser confirms them (the ack outbox, the socket,
    the ack endpoint); ``notification_delivered`` is sent then, not here.

    The marker is cleared *before* the claim, so a notification stored meanwhile re-marks
    the user and is never stranded; a full batch means more may wait, so it is re-set. An
    offer whose confirmation never comes lapses, and the sweep marks its user again.
    """
    state = ext_state.state
    state.clear_pending(user_id)
    try:
        rows = ext_state.store.claim(user_id, limit, channel, exclude)
    except Exception:
        state.mark_pending(user_id)  # database down: try again on a later request
        raise
    if len(rows) >= limit:
        state.mark_pending(user_id)
    return rows


def flash_pending(ext_state: Any) -> None:
    """``before_request`` hook: flash a few pending notifications into a page request.

    What the page before could not acknowledge (and the flashes a page before showed) is
    acknowledged first, so it is not flashed.
    """
    ack_outbox.consume(ext_state)
    if not ext_state.state.anyone_pending():
        return  # the healthy steady state: an in-memory check, nothing else
    req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not five
    if req.method != "GET" or req.endpoint in (None, "static") or req.blueprint == ext_state.blueprint_name:
        return
    uid = current_user_id()
    if uid is None or not ext_state.state.may_have_pending(uid):
        return
    accept = req.accept_mimetypes
    if (accept and not accept.accept_html) or req.headers.get("X-Requested-With"):
        return  # an API or XHR call renders no flashes; leave the rows for a page or a poll
    cfg = ext_state.app.config
    if req.endpoint in cfg["NOTIFY_EMERGENCY_FLASH_SKIP_ENDPOINTS"]:
        return  # the host says these never show flashes (a logout, a download, an embed)
    waiting = session.get("_flashes", [])
    room = cfg["NOTIFY_EMERGENCY_FLASH_BATCH_SIZE"] - len(waiting)
    if room <= 0:
        return
    # a flash of ours still waiting in the session is under its offer, however old: not twice
    exclude = {nid for _, message in waiting if (nid := flash_id(message)) is not None}
    try:
        rows = claim_for_user(ext_state, uid, room, "flash", exclude)
    except Exception as exc:  # never break the host's page because our store is down
        ext_state.app.logger.warning("flask-notify-emergency: could not claim pending notifications: %s", exc)
        return
    if not rows:
        return
    categories = cfg["NOTIFY_EMERGENCY_FLASH_CATEGORIES"]
    cut = cfg["NOTIFY_EMERGENCY_FLASH_MESSAGE_MAX_LENGTH"]
    remember_claimed(uid, [int(row["id"]) for row in rows])
    # only a request that claimed something pays for looking at its response
    after_this_request(lambda response: settle_response(ext_state, response))
    for row in rows:
        flash(flash_message(row, cut), categories.get(row["priority"], "info"))


def settle_outbox(ext_state: Any, response: Any) -> Any:
    """``after_request`` hook: the flashes a page shows go into the ack outbox cookie, for the
    browser's next request to confirm (:func:`.ack_outbox.settle`)."""
    return ack_outbox.settle(ext_state, response)

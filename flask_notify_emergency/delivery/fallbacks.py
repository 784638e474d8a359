"""Built-in fallbacks: the pending marker (a signal receiver), the flash on the next page
request, and the claim behind the polling endpoint.

A host adds its own fallback by connecting to :data:`..signals.notification_fallback`.
"""

from __future__ import annotations

from typing import Any

from flask import flash, request, session

from .. import signals
from ..access import current_user_id
from .i18n import gettext


def connect_receivers(app: Any, ext_state: Any) -> None:
    """Connect the built-in receivers for ``app`` (kept alive by ``ext_state``)."""

    def mark_pending(sender: Any, notification: dict[str, Any], reason: str, **_: Any) -> None:
        ext_state.state.mark_pending(str(notification["user_id"]))

    ext_state.receivers.append(mark_pending)
    signals.notification_fallback.connect(mark_pending, sender=app, weak=False)


def claim_for_user(ext_state: Any, user_id: str, limit: int, channel: str) -> list[dict[str, Any]]:
    """Claim up to ``limit`` pending rows of a user, keeping the pending marker right.

    The marker is cleared *before* the claim, so a notification stored meanwhile re-marks
    the user and is never stranded; a full batch means more may wait, so it is re-set.
    """
    state = ext_state.state
    state.clear_pending(user_id)
    try:
        rows = ext_state.store.claim(user_id, limit, channel)
    except Exception:
        state.mark_pending(user_id)  # database down: try again on a later request
        raise
    if len(rows) >= limit:
        state.mark_pending(user_id)
    if rows:
        signals.notification_delivered.send(
            ext_state.app, notification_ids=[r["id"] for r in rows], user_id=user_id, channel=channel)
    return rows


def flash_pending(ext_state: Any) -> None:
    """``before_request`` hook: flash a few pending notifications into a page request."""
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
    waiting = len(session.get("_flashes", []))
    room = cfg["NOTIFY_EMERGENCY_FLASH_BATCH_SIZE"] - waiting
    if room <= 0:
        return
    try:
        rows = claim_for_user(ext_state, uid, room, "flash")
    except Exception as exc:  # never break the host's page because our store is down
        ext_state.app.logger.warning("flask-notify-emergency: could not claim pending notifications: %s", exc)
        return
    categories = cfg["NOTIFY_EMERGENCY_FLASH_CATEGORIES"]
    cut = cfg["NOTIFY_EMERGENCY_FLASH_MESSAGE_MAX_LENGTH"]
    for row in rows:
        # TRANSLATORS: a notification shown as a flash message: its title, then its text
        text = gettext("%(title)s: %(message)s", title=row["title"], message=row["message"])
        if len(text) > cut:
            text = text[: cut - 1] + "\u2026"
        flash(text, categories.get(row["priority"], "info"))

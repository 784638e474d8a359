"""The flashes the extension adds, from the claim to the page that shows them.

A notification is flashed as escaped :class:`~markupsafe.Markup`: its text, then its id
written in invisible characters (:func:`id_marker`). A host template that prints
``{{ message }}`` or ``{{ message|safe }}`` shows the text literally (the user's text can
never become markup), a host that sends the text on as text (JSON, a plain-text page) shows it
clean, and the shipped client reads the id from the page to drop a copy it has already shown.

Rows are claimed for a page request before the page exists, so the response decides
afterwards: a redirect, an error or a response that is not HTML will not show the flashes,
and the rows claimed for it go back to pending (their flashes leave the session). A logout
(Flask-Login's ``user_logged_out``) does the same for every flash of ours still waiting in
the session, so the next person at that browser never sees them.
"""

from __future__ import annotations

import re
from typing import Any

from flask import g, session
from markupsafe import Markup

#: Around the id: INVISIBLE SEPARATOR; its bits: ZERO WIDTH SPACE (0), ZERO WIDTH NON-JOINER (1).
MARK, ZERO, ONE = "\u2063", "\u200b", "\u200c"
_MARKER_RE = re.compile(f"{MARK}([{ZERO}{ONE}]{{1,62}}){MARK}$")
#: Where a page request keeps what it claimed: ``(user id, [notification id, ...])``.
_CLAIMED = "_notify_emergency_flashed"


def id_marker(notification_id: int) -> str:
    """The id in invisible characters, as the client script reads it (``static/client.js``)."""
    return MARK + format(int(notification_id), "b").replace("0", ZERO).replace("1", ONE) + MARK


def flash_message(row: dict[str, Any], max_length: int) -> Markup:
    """The flash for one claimed row: ``title: message`` escaped and cut, then the id marker."""
    text = f"{row['title']}: {row['message']}"
    if len(text) > max_length:
        text = text[: max_length - 1] + "\u2026"
    return Markup.escape(text) + Markup(id_marker(row["id"]))


def flash_id(message: Any) -> int | None:
    """The notification id of a flash the extension added, or None for any other flash.

    A string is read too: a session serializer that does not keep ``Markup`` returns ours as one.
    """
    if not isinstance(message, str):
        return None
    match = _MARKER_RE.search(message)
    return int(match.group(1).replace(ZERO, "0").replace(ONE, "1"), 2) if match else None


def remember_claimed(user_id: str, ids: list[int]) -> None:
    """Note what this request claimed, for :func:`settle_response`."""
    claimed = g.get(_CLAIMED)
    if claimed is None:
        setattr(g, _CLAIMED, (user_id, list(ids)))
    else:
        claimed[1].extend(ids)


def response_shows_flashes(response: Any) -> bool:
    """Only a successful HTML page shows flashes; a redirect, an error or JSON does not."""
    return 200 <= response.status_code < 300 and response.mimetype == "text/html"


def settle_response(ext_state: Any, response: Any) -> Any:
    """After a request that claimed rows (``after_this_request``): give them back when its
    response will not show them."""
    claimed = g.pop(_CLAIMED, None)
    if claimed is None or response_shows_flashes(response):
        return response  # the usual case: nothing was claimed, or the page shows it
    user_id, ids = claimed
    # the database down: the flashes stay in the session, for the user's next page
    _give_back(ext_state, user_id, ids, keep_on_failure=True)
    return response


def on_logout(ext_state: Any, user: Any) -> None:
    """Flask-Login logged a user out: what was flashed for them and not yet shown goes back."""
    claimed = g.pop(_CLAIMED, None)
    user_id = None if user is None else user.get_id()
    if user_id is None:
        return
    ids = set(claimed[1]) if claimed else set()
    ids |= {nid for _, message in session.get("_flashes", ()) if (nid := flash_id(message)) is not None}
    # the database down: the flashes leave the session anyway; the next person must not see them
    _give_back(ext_state, str(user_id), sorted(ids), keep_on_failure=False)


def _give_back(ext_state: Any, user_id: str, ids: list[int], keep_on_failure: bool) -> None:
    """Return the rows of ``ids`` to pending and take their flashes out of the session."""
    if not ids:
        return
    try:
        released = ext_state.store.unclaim(ids, user_id, "flash")
    except Exception as exc:
        ext_state.app.logger.warning(
            "flask-notify-emergency: could not return %d claimed notification(s) to pending: %s", len(ids), exc)
        if keep_on_failure:
            return
        released = 0
    wanted = set(ids)
    waiting = session.get("_flashes")
    if waiting:
        kept = [(c, m) for c, m in waiting if flash_id(m) not in wanted]
        if len(kept) != len(waiting):
            if kept:
                session["_flashes"] = kept
            else:
                session.pop("_flashes", None)
    if released:
        ext_state.state.mark_pending(user_id)

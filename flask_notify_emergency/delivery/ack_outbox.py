"""The ack outbox: acknowledgements a page could not get to the server over its socket.

The shipped client shows a notification that came over the socket, puts its id in the outbox
(a cookie named ``NOTIFY_EMERGENCY_ACK_COOKIE_NAME``: ids joined by ``.``) and then sends the
acknowledgement. When the socket drops between the two, the id stays in the cookie, and the
browser's next request to the app carries it: a page load or a poll. That request
acknowledges the ids for the signed-in user before anything is flashed or claimed, so a
notification already on screen is not handed to another channel (another tab, the next page).
The client takes ids out once a reply confirms them; acknowledging an id twice changes nothing,
and ids of another user's rows are ignored.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request

from ..access import current_user_id
from ..models import MAX_ROW_ID

#: Ids read from one request's cookie; the client keeps no more.
MAX_IDS = 20
_ID = re.compile(r"[0-9]{1,18}")


def outbox_ids(raw: str | None) -> list[int]:
    """The ids in an outbox cookie's value (at most :data:`MAX_IDS`; anything else ignored)."""
    if not raw:
        return []
    ids: list[int] = []
    for part in raw.split(".", MAX_IDS)[:MAX_IDS]:
        if _ID.fullmatch(part):
            ids.append(int(part))
    return ids


def consume(ext_state: Any) -> None:
    """``before_request``: acknowledge what the cookie holds, for the signed-in user."""
    raw = request.cookies.get(ext_state.ack_cookie)
    if not raw:
        return  # the usual case: no cookie at all
    endpoint = request.endpoint
    if endpoint is None or endpoint.rpartition(".")[2] == "static":
        return  # the page's own script and styles: the page request already took them
    ids = [nid for nid in outbox_ids(raw) if 0 < nid <= MAX_ROW_ID]
    uid = current_user_id() if ids else None
    if uid is None:
        return
    try:
        ext_state.dispatcher.acknowledge_many(ids, uid)
    except Exception as exc:  # the database is down: the cookie stays, the next request tries again
        ext_state.app.logger.warning("flask-notify-emergency: could not take the acknowledgements "
                                     "a page left in its outbox: %s", exc)

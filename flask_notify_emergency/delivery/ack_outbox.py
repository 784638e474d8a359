"""The ack outbox: ids of notifications the browser showed, on their way to the server.

A cookie named ``NOTIFY_EMERGENCY_ACK_COOKIE_NAME`` (ids joined by ``.``) that every request
to the app carries: a page load, a poll, the ack endpoint. That request acknowledges the ids
for the signed-in user before anything is flashed or claimed (:func:`consume`), so a
notification already on screen is not handed to another channel (another tab, the next page).
Two writers fill it:

* the shipped client, for what it showed from the socket or a poll: it puts the id in, then
  sends the acknowledgement over the socket or with its next poll; when that fails the id stays
  in the cookie for the next request. The client takes ids out once a reply confirms them.
* the server, for the flashes a page response rendered (:func:`settle`): the response sets the
  cookie, so the browser that received the page confirms its flashes with its next request,
  with or without the client script. A response that never reached a browser sets nothing: its
  flashes are offered again once ``NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT`` passes.

A page load (not the client's own API calls, whose cookie the client keeps) also takes out of
the cookie what it acknowledged, so a host without the script does not send them for ever.
Acknowledging an id twice changes nothing, and ids of another user's rows are ignored.
"""

from __future__ import annotations

import re
from typing import Any

from flask import g, request
from flask.globals import request_ctx

from ..access import current_user_id
from ..models import MAX_ROW_ID
from .flashes import flash_id, response_shows_flashes

#: Ids read from one request's cookie; the client keeps no more.
MAX_IDS = 20
_ID = re.compile(r"[0-9]{1,18}")
#: Where a request keeps the cookie ids it acknowledged: the list, or None when that failed.
_CONSUMED = "_notify_emergency_outbox"


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
    """``before_request``: acknowledge what the cookie holds, for the signed-in user, in one
    transaction (each row counted by the channel that offered it)."""
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
        return
    setattr(g, _CONSUMED, ids)


def rendered_flash_ids(taken: Any) -> list[int]:
    """Ids of our flashes among those a request took out of the session to show
    (``get_flashed_messages``; with categories or without)."""
    return [nid for item in taken
            if (nid := flash_id(item[1] if isinstance(item, tuple) else item)) is not None]


def settle(ext_state: Any, response: Any) -> Any:
    """``after_request``: put the flashes a page shows into the outbox cookie, and take out
    what this page load acknowledged."""
    taken = request_ctx.flashes  # None unless the request called get_flashed_messages()
    consumed = g.get(_CONSUMED)
    if not taken and not consumed:
        return response  # the usual case: two lookups, nothing else
    shown = rendered_flash_ids(taken) if taken and response_shows_flashes(response) else []
    if not shown and not consumed:
        return response
    if consumed and not shown and request.blueprint == ext_state.blueprint_name:
        return response  # the client's poll or ack: the client keeps its own cookie
    kept = [] if consumed else outbox_ids(request.cookies.get(ext_state.ack_cookie))
    ids = [nid for nid in kept if nid not in shown] + shown
    if ids:
        response.set_cookie(ext_state.ack_cookie, ".".join(str(nid) for nid in ids[-MAX_IDS:]), path="/",
                            samesite="Lax", secure=request.is_secure, httponly=False)
    else:
        response.delete_cookie(ext_state.ack_cookie, path="/", samesite="Lax", secure=request.is_secure)
    return response

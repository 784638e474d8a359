"""Socket.IO handlers on the notification namespace.

Users join their own room on connect, from ``current_user`` on the server, never from
anything the client sends. The browser acknowledges each notification it shows, whatever
brought it (the socket, a poll, a flash): one transaction per acknowledgement frame.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask_socketio import emit, join_room

from .. import signals
from ..access import current_user_id
from .notifier import ACK_EVENT
from .polling import LOAD_KEY, interval_for
from ..models import MAX_ROW_ID

CANARY_EVENT = "notify_emergency:canary"
MODE_EVENT = "notify_emergency:mode"
PENDING_EVENT = "notify_emergency:pending"
#: The most notification ids one acknowledgement frame may carry.
MAX_ACK_IDS = 200


def valid_ids(raw_ids: list[Any]) -> list[int]:
    """The row ids in a client's list (ints or digit strings naming a possible row), each once,
    in the order given."""
    ids: list[int] = []
    for raw in raw_ids:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            continue
        try:
            nid = int(raw)
        except ValueError:
            continue
        if 0 < nid <= MAX_ROW_ID and nid not in ids:
            ids.append(nid)
    return ids


def register(socketio: Any, ext_state: Any) -> None:
    """Attach connect/disconnect/ack handlers for ``ext_state``'s namespace."""
    namespace = ext_state.namespace
    sids: dict[str, str] = {}

    def on_connect(auth: Any = None) -> bool:
        uid = current_user_id()
        if uid is None:
            return False  # anonymous sockets are refused; they poll nothing either
        join_room(ext_state.notifier.room(uid))
        sids[request.sid] = uid  # type: ignore[attr-defined]
        ext_state.state.connection_opened(uid)
        if ext_state.state.may_have_pending(uid):
            # what waited while this user was away: the client claims it with one poll
            emit(PENDING_EVENT, {})
        return True

    def on_disconnect(*_: Any) -> None:
        uid = sids.pop(request.sid, None)  # type: ignore[attr-defined]
        if uid is not None:
            ext_state.state.connection_closed(uid)

    def on_ack(data: Any) -> dict[str, Any]:
        uid = sids.get(request.sid)  # type: ignore[attr-defined]
        if uid is None:
            return {"ok": False, "error": "not connected"}
        ids = data.get("ids") if isinstance(data, dict) else None
        if ids is None and isinstance(data, dict):
            ids = [data.get("id")]
        if not isinstance(ids, list):
            return {"ok": False, "error": "send {'id': N} or {'ids': [N, ...]}"}
        if len(ids) > MAX_ACK_IDS:
            return {"ok": False, "error": f"at most {MAX_ACK_IDS} ids per ack; send the rest in another"}
        return {"ok": True, "acknowledged": ext_state.dispatcher.acknowledge_many(valid_ids(ids), uid)}

    def on_mode_changed(sender: Any, old: str, new: str, **_: Any) -> None:
        # best effort: pages re-read banners and mode; polling covers a broken socket
        try:
            # with the interval of the new mode: pages spread their first poll over it
            interval = interval_for(ext_state.app.config, new, ext_state.state.get(LOAD_KEY))
            socketio.emit(MODE_EVENT, {"mode": new, "poll_interval": interval}, namespace=namespace)
        except Exception:
            pass

    ext_state.receivers.append(on_mode_changed)
    signals.mode_changed.connect(on_mode_changed, sender=ext_state.app, weak=False)

    socketio.on_event("connect", on_connect, namespace=namespace)
    socketio.on_event("disconnect", on_disconnect, namespace=namespace)
    socketio.on_event(ACK_EVENT, on_ack, namespace=namespace)
    ext_state.connected_sids = sids

"""Recovery actions every serving worker runs when one process asks for them.

Some actions only make sense inside the process that holds the sockets: reconnecting the
Socket.IO message-queue client, disconnecting sockets so browsers connect afresh, clearing
the connection registry of sockets that died. ``flask emergency restart-websockets`` and
``clear-sessions`` run in a CLI process that holds none, so they also write a
``cluster_action`` switch; the shared state spreads it like any switch (Redis pub/sub, or the
database refresh), and each serving worker runs the action on itself, audited with its
process id.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from ..models import utcnow
from . import actions as recovery_actions

log = logging.getLogger("flask_notify_emergency")
KEY = "cluster_action"
ACTIONS = ("restart-websockets", "clear-sessions", "clear-problematic-sessions")


def request(ext: Any, action: str, actor: str) -> dict[str, Any]:
    """Ask every serving worker to run ``action`` on itself; return the request."""
    if action not in ACTIONS:
        raise ValueError(f"unknown cluster action {action!r}: use one of {', '.join(ACTIONS)}.")
    value = {"id": uuid.uuid4().hex, "action": action, "by": actor, "at": utcnow().isoformat() + "Z"}
    ext.control.write(KEY, value, actor)
    return value


def _run(ext: Any, value: dict[str, Any]) -> None:
    actor = f"{value.get('by', '?')} via worker {ext.state.process_id}"
    action = value.get("action")
    try:
        with ext.app.app_context():
            if action == "restart-websockets":
                recovery_actions.restart_websockets(ext, actor=actor, source="cluster")
            elif action in ("clear-sessions", "clear-problematic-sessions"):
                recovery_actions.clear_sessions(ext, actor=actor, source="cluster",
                                                problematic_only=action == "clear-problematic-sessions")
    except Exception:  # one worker's failure must not stop the listener; it is in the log
        log.exception("flask-notify-emergency: cluster action %s failed in this worker", action)


def init_app(app: Any, ext: Any) -> None:
    """Run each new cluster action once, in serving workers only."""
    seen: set[str] = set()
    born = utcnow().isoformat() + "Z"  # a request older than this worker is not for it

    def on_change(key: str, value: Any) -> None:
        if key != KEY or not isinstance(value, dict) or not ext.worker_start.started:
            return
        request_id = str(value.get("id"))
        if request_id in seen or str(value.get("at", "")) < born:
            return
        seen.add(request_id)
        threading.Thread(target=_run, args=(ext, value), name="notify-emergency-cluster-action",
                         daemon=True).start()

    ext.state.on_change(on_change)

"""Live updates of the admin dashboard over its own Socket.IO namespace.

``NOTIFY_EMERGENCY_ADMIN_NAMESPACE`` (default ``/notify-emergency-admin``) accepts admins
only: anyone else is refused at connect, and every event and every push checks again: the
user is loaded afresh through Flask-Login's user loader before each push, and a socket whose
user is gone or no longer an admin, or whose session logged out (Flask-Login's
``user_logged_out``), is disconnected and gets nothing more. While at least one admin is connected, this worker
pushes each of them the overview of the window they watch every
``NOTIFY_EMERGENCY_DASHBOARD_REFRESH_SECONDS``, and at once when the mode, the breaker or an
emergency changes, or a banner is posted.

The push doubles as the dashboard's heartbeat: the page calls itself *live* only while
pushes arrive. A socket that is connected but silent (Flask-SocketIO drops emits when its
message queue is down, and ping/pong keeps working) turns the page to *polling*, where it
reads the same JSON from ``<prefix>/api/overview``.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, request, session
from flask_login import user_logged_out

from .. import signals
from ..access import CSRF_SESSION_KEY, current_user_id, is_admin, load_user, user_is_admin
from ..learn import metrics
from .admin_pages import overview_payload

#: Server -> browser: ``{"window": name, "overview": {...}, "reason": why}``.
OVERVIEW_EVENT = "notify_emergency_admin:overview"
#: Browser -> server events, each answered through the Socket.IO acknowledgement.
SUBSCRIBE_EVENT = "notify_emergency_admin:subscribe"
REFRESH_EVENT = "notify_emergency_admin:refresh"
ADMIN_EVENTS = (SUBSCRIBE_EVENT, REFRESH_EVENT)
#: Signals after which every admin gets a fresh overview at once.
PUSH_ON = ("mode_changed", "breaker_changed", "emergency_detected", "emergency_resolved", "banner_posted")


class AdminChannel:
    """The admin namespace of one app: who watches which window, and the pusher."""

    def __init__(self, app: Flask, ext_state: Any) -> None:
        self.app = app
        self.ext = ext_state
        self.socketio = ext_state.socketio
        self.namespace: str = app.config["NOTIFY_EMERGENCY_ADMIN_NAMESPACE"]
        self.refresh: float = float(app.config.get("NOTIFY_EMERGENCY_DASHBOARD_REFRESH_SECONDS", 5.0))
        self.watchers: dict[str, str] = {}  # sid -> window name
        #: sid -> (user id, the session's CSRF token: it names the browser session the socket
        #: belongs to, so a logout there closes it)
        self.owners: dict[str, tuple[str, str | None]] = {}
        self.lock = threading.Lock()
        self.pusher_running = False
        #: a change push is running (``True``), and another change came during it (``again``)
        self.change_push_running = False
        self.change_push_again = False

    # -- handlers ------------------------------------------------------------------------
    def on_connect(self, auth: Any = None) -> bool:
        uid = current_user_id()
        if uid is None or not is_admin():
            return False  # refused: the browser gets connect_error, nothing else
        sid = request.sid  # type: ignore[attr-defined]
        with self.lock:
            self.watchers[sid] = metrics.DEFAULT_WINDOW
            self.owners[sid] = (uid, session.get(CSRF_SESSION_KEY))
        self._start_pusher()
        return True

    def on_disconnect(self, *_: Any) -> None:
        self._forget(request.sid)  # type: ignore[attr-defined]

    def _forget(self, sid: str) -> None:
        with self.lock:
            self.watchers.pop(sid, None)
            self.owners.pop(sid, None)

    def _refuse_if_not_admin(self) -> dict[str, Any] | None:
        if request.sid in self.watchers and is_admin():  # type: ignore[attr-defined]
            return None
        from flask_socketio import disconnect

        self._forget(request.sid)  # type: ignore[attr-defined]
        disconnect()
        return {"ok": False, "error": "admins only"}

    def drop(self, sids: list[str], why: str) -> None:
        """Stop pushing to these sockets and disconnect them."""
        for sid in sids:
            self._forget(sid)
            try:
                self.socketio.server.disconnect(sid, namespace=self.namespace)
            except Exception as exc:  # already gone
                self.app.logger.info("flask-notify-emergency: dashboard socket %s (%s): %s", sid, why, exc)

    def still_admins(self, sids: list[str]) -> list[str]:
        """Those of ``sids`` whose user, loaded afresh, is still an admin; the rest are dropped."""
        with self.lock:
            owners = {sid: self.owners.get(sid) for sid in sids}
        keep: list[str] = []
        lost: list[str] = []
        with self.app.app_context():
            verdicts: dict[str, bool] = {}
            for sid, owner in owners.items():
                if owner is None:
                    lost.append(sid)
                    continue
                uid = owner[0]
                if uid not in verdicts:
                    try:
                        verdicts[uid] = user_is_admin(load_user(self.app, uid))
                    except Exception as exc:  # cannot tell (database down): push nothing this time
                        self.app.logger.warning("flask-notify-emergency: dashboard user check: %s", exc)
                        return []
                (keep if verdicts[uid] else lost).append(sid)
        if lost:
            self.drop(lost, "no longer an admin")
        return keep

    def on_logged_out(self, sender: Any, user: Any = None, **_: Any) -> None:
        """Flask-Login's ``user_logged_out``: close the dashboard sockets of that session."""
        token = session.get(CSRF_SESSION_KEY)
        uid = None if user is None else user.get_id()
        with self.lock:
            sids = [sid for sid, (owner, owner_token) in self.owners.items()
                    if uid is not None and owner == str(uid) and owner_token is not None and owner_token == token]
        if sids:
            self.drop(sids, "logged out")

    def on_subscribe(self, data: Any = None) -> dict[str, Any]:
        """Watch another window; answers with its overview at once."""
        refused = self._refuse_if_not_admin()
        if refused:
            return refused
        name = data.get("window") if isinstance(data, dict) else None
        try:
            window = metrics.parse_window(name)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        with self.lock:
            self.watchers[request.sid] = window.name  # type: ignore[attr-defined]
        return {"ok": True, "window": window.name, "overview": self.compute(window.name)}

    def on_refresh(self, data: Any = None) -> dict[str, Any]:
        """The overview of the watched window, now."""
        refused = self._refuse_if_not_admin()
        if refused:
            return refused
        name = self.watchers.get(request.sid, metrics.DEFAULT_WINDOW)  # type: ignore[attr-defined]
        return {"ok": True, "window": name, "overview": self.compute(name)}

    # -- pushing -------------------------------------------------------------------------
    def compute(self, window_name: str) -> dict[str, Any]:
        with self.app.app_context():
            return overview_payload(self.ext, metrics.parse_window(window_name))

    def push(self, reason: str = "tick") -> int:
        """Send every watching admin the overview of their window; return how many got one."""
        with self.lock:
            watchers = dict(self.watchers)
        overviews: dict[str, dict[str, Any]] = {}
        for name in sorted(set(watchers.values())):
            try:
                overviews[name] = self.compute(name)
            except Exception as exc:  # the page falls back to polling and shows the error there
                self.app.logger.warning("flask-notify-emergency: dashboard overview failed: %s", exc)
        # rights are checked after the overviews are read: what a push carries was read while
        # its receiver was still an admin
        allowed = set(self.still_admins(list(watchers)))
        sent = 0
        for name, data in overviews.items():
            for sid in (sid for sid, watched in watchers.items() if watched == name and sid in allowed):
                try:
                    self.socketio.emit(OVERVIEW_EVENT, {"window": name, "reason": reason, "overview": data},
                                       to=sid, namespace=self.namespace)
                    sent += 1
                except Exception as exc:  # message queue down: the page notices the silence
                    self.app.logger.warning("flask-notify-emergency: dashboard push failed: %s", exc)
        return sent

    def _start_pusher(self) -> None:
        with self.lock:
            if self.pusher_running:
                return
            self.pusher_running = True
        self.socketio.start_background_task(self._pusher)

    def _pusher(self) -> None:
        while True:
            self.socketio.sleep(self.refresh)
            with self.lock:
                if not self.watchers:
                    self.pusher_running = False
                    return
            self.push("tick")

    def on_signal(self, sender: Any, **kwargs: Any) -> None:
        """A switch changed: push now, from a background task (never in the caller's request)."""
        self.push_change()

    def on_audit(self, entry_id: int) -> None:
        """An audit entry was written (the overview shows the newest): push it."""
        self.push_change()

    def push_change(self) -> None:
        """Push the overview from a background task. Changes that come while a push runs make
        it run once more when it ends, so the last push shows the last change (an action's
        signal comes before its audit entry is written), and a burst costs two pushes."""
        with self.lock:
            if not self.watchers:
                return
            if self.change_push_running:
                self.change_push_again = True
                return
            self.change_push_running = True
        self.socketio.start_background_task(self._push_changes)

    def _push_changes(self) -> None:
        while True:
            try:
                self.push("change")
            except Exception as exc:  # the pages poll as well; the next change pushes again
                self.app.logger.warning("flask-notify-emergency: dashboard push failed: %s", exc)
            with self.lock:
                again, self.change_push_again = self.change_push_again, False
                if not again:
                    self.change_push_running = False
                    return


def init_app(app: Flask, ext_state: Any) -> None:
    """Register the admin namespace on the host's Flask-SocketIO (nothing without one)."""
    if ext_state.socketio is None:
        return
    channel = AdminChannel(app, ext_state)
    ns = channel.namespace
    socketio = ext_state.socketio
    socketio.on_event("connect", channel.on_connect, namespace=ns)
    socketio.on_event("disconnect", channel.on_disconnect, namespace=ns)
    socketio.on_event(SUBSCRIBE_EVENT, channel.on_subscribe, namespace=ns)
    socketio.on_event(REFRESH_EVENT, channel.on_refresh, namespace=ns)
    for name in PUSH_ON:
        getattr(signals, name).connect(channel.on_signal, sender=app, weak=False)
    ext_state.receivers.append(channel.on_signal)
    user_logged_out.connect(channel.on_logged_out, sender=app, weak=False)
    ext_state.receivers.append(channel.on_logged_out)
    ext_state.audit.listeners.append(channel.on_audit)
    app.extensions["notify_emergency_admin_channel"] = channel

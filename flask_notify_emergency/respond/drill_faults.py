"""The faults a drill injects into the serving workers' real connections, and takes back.

A drill must break what the workers really use, the way an outage would, and leave the
finding to the monitor. So it does not set a flag anybody reads: it writes the control switch
``drill_fault`` (``{"drill_id", "faults", "until", "by"}``), which the shared state spreads
like every switch (Redis pub/sub, else the database refresh), and every process that serves
or monitors (its workers have started, or its monitor runs) cuts, in itself, the connections
the switch names. Each cut points the connection at a closed port of this host (a socket of
the process's own, bound and never listening), so every real operation fails with its
driver's own "connection refused"; ``message_queue_hang`` points it at a black hole instead (a
port of the process's own that accepts connections and never answers), so operations hang
until their own time limit:

==============  ============================================================================
fault           what is cut in each serving or monitoring process
==============  ============================================================================
message_queue   the Socket.IO client manager's Redis: its URL points at the closed port and
                its connections are dropped, so emits are lost ("giving up") and its listener
                retries, exactly as with the queue down (a Redis message queue only)
message_queue_  the Socket.IO client manager's Redis *for publishing*: its URL points at the
hang            black hole, so every emit hangs until the notifier's time limit
                (``NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT``) and falls back, and the breaker
                counts the failures; the listener keeps its connection and the users' sockets
                stay connected (the socket layer is "up", notifications are not delivered)
shared_state    the shared-state Redis: the client of :class:`..state.RedisState` and every
                client made from its URL (evidence, worker reports, cluster-action answers)
database        the engine's connections: pooled ones are dropped and each new one goes to
                the closed port (SQLite: a file in a directory that does not exist)
==============  ============================================================================

Taking the fault back restores the configured addresses; the drivers reconnect by
themselves, as after a real outage (closing the black hole resets the connections hung in
it). A process takes a fault back on its own once the switch's ``until`` has passed: the
drill renews it with its lease (:mod:`.drill_lease`), so if the drill's process dies, every
worker recovers within one lease even if it cannot hear the switch (its database cut, or the
memory backend), and the monitor's next tick clears the switch.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import sqlalchemy as sa

from ..detect import queue_manager

log = logging.getLogger("flask_notify_emergency")

KEY = "drill_fault"
FAULTS = ("message_queue", "message_queue_hang", "shared_state", "database")
#: Faults that cut the Socket.IO message queue.
QUEUE_FAULTS = ("message_queue", "message_queue_hang")
#: Connections hung in the black hole at once (the listen backlog).
BLACK_HOLE_BACKLOG = 128
#: How often each process checks whether its fault has run out.
EXPIRY_POLL_SECONDS = 0.25


def requirement_problem(ext: Any, faults: tuple[str, ...] | list[str]) -> str | None:
    """Why this app cannot have ``faults`` injected (one line), or None."""
    for fault in faults:
        if fault not in FAULTS:
            return f"unknown fault {fault!r}: use {', '.join(FAULTS)}"
        if fault in QUEUE_FAULTS:
            manager = queue_manager(ext.socketio) if ext.socketio is not None else None
            if manager is None or not hasattr(manager, "redis_url"):
                return ("this app's Socket.IO server has no Redis message queue to break: set "
                        "SOCKETIO_MESSAGE_QUEUE to a redis:// URL (the real-time path of several workers)")
        if fault == "shared_state" and getattr(ext.state, "backend", "memory") != "redis":
            return "this app keeps its shared state in memory: set NOTIFY_EMERGENCY_REDIS_URL to drill a Redis outage"
    return None


def inject(ext: Any, drill_id: int, faults: list[str], until: float, actor: str) -> None:
    """Tell every serving and monitoring process to cut ``faults`` until ``until`` (epoch
    seconds; renew by calling again)."""
    ext.control.write(KEY, {"drill_id": drill_id, "faults": list(faults), "until": until, "by": actor}, actor)


def take_back(ext: Any, actor: str) -> None:
    """Tell every process to restore what it cut."""
    ext.control.write(KEY, None, actor)


def current(ext: Any) -> dict[str, Any] | None:
    """The fault switch as stored (None: no fault)."""
    value = ext.control.read(KEY)
    return value if isinstance(value, dict) else None


class FaultPoint:
    """This process's side of the switch: what it has cut, and how to put it back."""

    def __init__(self, ext: Any) -> None:
        self.ext = ext
        self.cut: dict[str, Any] = {}  # fault -> what to restore
        self.until = 0.0
        self.drill_id: int | None = None
        self._wanted: Any = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._hole: socket.socket | None = None
        self._black_hole: socket.socket | None = None

    # -- the switch ------------------------------------------------------------------------
    def applies_here(self) -> bool:
        """Only processes that serve or monitor take part (not a ``flask emergency`` command)."""
        monitor = getattr(self.ext, "monitor", None)
        return bool(self.ext.worker_start.started or (monitor is not None and monitor.running))

    def wanted(self, value: Any) -> None:
        """The switch changed: apply it (in this process's fault thread)."""
        self._wanted = value
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="notify-emergency-drill-fault", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(EXPIRY_POLL_SECONDS)
            self._wake.clear()
            try:
                self.apply(self._wanted)
            except Exception:  # never let the fault thread die: it is what takes a fault back
                log.exception("flask-notify-emergency: applying the drill fault switch failed")

    def apply(self, value: Any, now: float | None = None) -> None:
        """Cut what ``value`` names (while its ``until`` is ahead), restore the rest."""
        now = time.time() if now is None else now
        wanted: set[str] = set()
        if isinstance(value, dict) and float(value.get("until") or 0) > now:
            wanted = {f for f in value.get("faults") or () if f in FAULTS}
        with self._lock:
            if wanted:
                self.drill_id = value.get("drill_id")
            for fault in [f for f in self.cut if f not in wanted]:
                self._restore(fault)
            for fault in sorted(wanted - set(self.cut)):
                self._cut(fault)
            if wanted:
                self.until = float(value["until"])
            elif self._hole is not None:
                self._hole.close()
                self._hole = None

    # -- the closed port -------------------------------------------------------------------
    def hole(self) -> int:
        """A port of this host that refuses connections while the fault lasts."""
        if self._hole is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
            self._hole = sock
        return int(self._hole.getsockname()[1])

    def hole_url(self) -> str:
        return f"redis://127.0.0.1:{self.hole()}/0"

    def black_hole_url(self) -> str:
        """A Redis URL at a port of this process's own that accepts connections (the kernel
        completes them, up to the backlog) and never answers."""
        if self._black_hole is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen(BLACK_HOLE_BACKLOG)  # never accepted, never read: every request hangs
            self._black_hole = sock
        return f"redis://127.0.0.1:{self._black_hole.getsockname()[1]}/0"

    def _close_black_hole(self) -> None:
        """Closing the listener resets the connections waiting in it: hung requests fail now."""
        if self._black_hole is not None:
            self._black_hole.close()
            self._black_hole = None

    # -- each fault ------------------------------------------------------------------------
    def _cut(self, fault: str) -> None:
        ext = self.ext
        if fault == "message_queue":
            manager = queue_manager(ext.socketio) if ext.socketio is not None else None
            if manager is None or not hasattr(manager, "redis_url"):
                return
            self.cut[fault] = manager.redis_url
            manager.redis_url = self.hole_url()
            manager.connected = False  # the next publish connects afresh: to the closed port
            client = getattr(manager, "redis", None)
            if client is not None:
                client.connection_pool.disconnect()  # in use too: the listener's read breaks
        elif fault == "message_queue_hang":
            manager = queue_manager(ext.socketio) if ext.socketio is not None else None
            if manager is None or not hasattr(manager, "redis_url"):
                return
            self.cut[fault] = manager.redis_url
            manager.redis_url = self.black_hole_url()
            # the next publish connects afresh, to the black hole; the listener keeps reading
            # its own connection (its pub/sub object is the old one), so sockets stay served
            manager.connected = False
        elif fault == "shared_state":
            if getattr(ext.state, "backend", "memory") != "redis":
                return
            self.cut[fault] = True
            ext.state.redirect(self.hole_url())
            ext.evidence.reset()
        elif fault == "database":
            self.cut[fault] = True
            ext.engine.dispose()  # pooled connections go; new ones are cut in _on_connect
        log.warning("flask-notify-emergency: drill #%s: %s cut in this process", self.drill_id, fault)

    def _restore(self, fault: str) -> None:
        ext = self.ext
        saved = self.cut.pop(fault)
        if fault in QUEUE_FAULTS:
            manager = queue_manager(ext.socketio)
            if manager is not None:
                manager.redis_url = saved
                manager.connected = False
            if fault == "message_queue_hang":
                self._close_black_hole()
        elif fault == "shared_state":
            ext.state.redirect(None)
            ext.evidence.reset()
        elif fault == "database":
            ext.engine.dispose()  # connections that failed are gone; new ones go to the database
        log.warning("flask-notify-emergency: drill #%s: %s restored in this process", self.drill_id, fault)

    def on_connect(self, dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        """SQLAlchemy's ``do_connect``: while the database is cut, connect to the closed port."""
        if "database" not in self.cut:
            return None
        args, params = list(cargs), dict(cparams)
        if dialect.name == "sqlite":
            args = ["/nonexistent-notify-emergency-drill/cut.sqlite"] + args[1:]
            params.pop("uri", None)
        else:
            params.update(host="127.0.0.1", port=self.hole())
        return dialect.connect(*args, **params)


def init_app(app: Any, ext: Any) -> None:
    """Every serving and monitoring process follows the switch."""
    point = FaultPoint(ext)
    ext.drill_faults = point
    sa.event.listen(ext.engine, "do_connect", point.on_connect)

    def on_change(key: str, value: Any) -> None:
        if key == KEY and (point.cut or point.applies_here()):
            point.wanted(value)

    ext.state.on_change(on_change)

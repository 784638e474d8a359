"""Recovery actions that act on connections: Redis, the database, the Socket.IO queue, the
breaker, the connection registry, and the operator's own commands.

Each returns a dict (``ok``, ``action``, ``outcome`` ok/failed/skipped, what it did) and
writes one audit entry. They never raise for a failure of the thing they repair; they raise
:class:`RecoveryError` only for a request that cannot be carried out as asked.
"""

from __future__ import annotations

import ctypes

import json
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Any

import sqlalchemy as sa

from ..detect import listener_hears, queue_answers, queue_manager, send_canary

log = logging.getLogger("flask_notify_emergency")
OUTPUT_LIMIT = 20_000


class RecoveryError(Exception):
    """A recovery request cannot be carried out; the message says what to change."""


def audit_action(ext: Any, actor: str, action: str, source: str, arguments: dict[str, Any] | None,
                 result: dict[str, Any], event_id: int | None = None) -> None:
    """One audit entry per action; a database that is down must not stop the repair."""
    detail = {k: v for k, v in result.items() if k not in ("ok", "action", "outcome")}
    try:
        ext.audit.record(actor, action, source, arguments, outcome=result.get("outcome", "ok"),
                         detail=json.dumps(detail, default=str)[:4000], event_id=event_id)
    except Exception as exc:
        log.warning("flask-notify-emergency: could not audit %s (%s: %s)", action, type(exc).__name__, exc)


def _result(action: str, outcome: str, **fields: Any) -> dict[str, Any]:
    return {"ok": outcome != "failed", "action": action, "outcome": outcome, **fields}


def reconnect_redis(ext: Any, actor: str = "monitor", source: str = "monitor",
                    event_id: int | None = None) -> dict[str, Any]:
    """Drop the shared-state Redis connections and reconnect (reseeding Redis from the DB)."""
    if ext.state.backend != "redis":
        result = _result("reconnect-redis", "skipped", note="memory backend: no Redis connection")
    else:
        try:
            healthy = bool(ext.state.reconnect())
            result = _result("reconnect-redis", "ok" if healthy else "failed", healthy=healthy)
        except Exception as exc:
            result = _result("reconnect-redis", "failed", error=f"{type(exc).__name__}: {exc}")
    audit_action(ext, actor, "reconnect-redis", source, None, result, event_id)
    return result


def reconnect_database(ext: Any, actor: str = "monitor", source: str = "monitor",
                       event_id: int | None = None) -> dict[str, Any]:
    """Throw away pooled database connections (they may be dead) and probe a fresh one."""
    ext.engine.dispose()
    start = time.perf_counter()
    try:
        with ext.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        result = _result("reconnect-database", "ok", latency_ms=round((time.perf_counter() - start) * 1000, 3))
    except Exception as exc:
        result = _result("reconnect-database", "failed", error=f"{type(exc).__name__}: {exc}")
    audit_action(ext, actor, "reconnect-database", source, None, result, event_id)
    return result


def restart_websockets(ext: Any, actor: str = "monitor", source: str = "monitor", event_id: int | None = None,
                       disconnect_sockets: bool = True) -> dict[str, Any]:
    """Reconnect the real-time layer of this process and probe it with the canary.

    1. the shared-state Redis reconnects (Redis backend);
    2. a pub/sub client manager (Flask-SocketIO's message queue) gets a new Redis client
       and pub/sub object, and a dead listener thread is started again;
    3. with ``disconnect_sockets`` this process's sockets on the notification namespace are
       disconnected, so clients connect afresh (their notifications wait in the store);
    4. the canary must make the trip.
    """
    steps: dict[str, Any] = {}
    sio = ext.socketio
    if sio is None:
        result = _result("restart-websockets", "skipped", note="no Socket.IO server configured")
        audit_action(ext, actor, "restart-websockets", source, None, result, event_id)
        return result
    if ext.state.backend == "redis":
        try:
            steps["shared_state"] = "reconnected" if ext.state.reconnect() else "unreachable"
        except Exception as exc:
            steps["shared_state"] = f"{type(exc).__name__}: {exc}"
    manager = queue_manager(sio)
    if manager is None:
        steps["queue"] = "none (single process)"
    else:
        if hasattr(manager, "_redis_connect"):  # RedisManager (and its valkey twin)
            try:
                manager.connected = False
                manager._redis_connect()  # the next publish uses the fresh client
                steps["queue"] = "new connection"
            except Exception as exc:
                steps["queue"] = f"{type(exc).__name__}: {exc}"
        elif hasattr(manager, "publisher_connection"):  # KombuManager: the next publish connects afresh
            old, manager.publisher_connection = manager.publisher_connection, manager._connection()
            try:
                old.release()
            except Exception:  # a dead connection may not close cleanly; it is dropped either way
                pass
            steps["queue"] = "new connection"
        steps["listener"] = wake_listener(sio, manager, ext.namespace)
    if disconnect_sockets:
        sids = list(getattr(ext, "connected_sids", {}) or {})
        for sid in sids:
            try:
                sio.server.disconnect(sid, namespace=ext.namespace)
            except Exception as exc:  # one bad socket must not stop the others
                log.warning("flask-notify-emergency: could not disconnect %s: %s", sid, exc)
        steps["disconnected_sockets"] = len(sids)
    try:
        steps["canary"] = send_canary(sio, ext.namespace, float(ext.app.config["NOTIFY_EMERGENCY_CANARY_TIMEOUT"]))
        result = _result("restart-websockets", "ok", steps=steps)
    except Exception as exc:
        result = _result("restart-websockets", "failed", steps=steps, error=f"{type(exc).__name__}: {exc}")
    audit_action(ext, actor, "restart-websockets", source, {"disconnect_sockets": disconnect_sockets},
                 result, event_id)
    return result


#: How long a live queue listener may take to hand back a packet before it counts as asleep.
LISTENER_PROBE_SECONDS = 1.0


def wake_listener(sio: Any, manager: Any, namespace: str) -> str:
    """Make this process's Socket.IO queue listener hear the queue now.

    A dead listener is started again. A live Redis one that does not hear the queue while Redis
    answers is asleep in python-socketio's reconnect back-off (up to 60 s after an outage),
    during which this worker's sockets get nothing from other workers: a new listener starts
    now, and the old one is ended the moment its sleep does (an asynchronous ``SystemExit``
    in that thread, raised again until it is gone: :func:`_end_listener`).
    """
    listener = getattr(manager, "thread", None)
    if listener is None or getattr(manager, "write_only", False):
        return "not started in this process"
    if hasattr(listener, "is_alive") and not listener.is_alive():
        manager.thread = sio.server.start_background_task(manager._thread)
        return "restarted"
    if not hasattr(manager, "_redis_connect"):  # Kombu's listener reconnects by itself
        return "running"
    if not queue_answers(manager):  # the queue itself is down: a new listener would only back off too
        return "running; the queue does not answer"
    if listener_hears(manager, namespace, LISTENER_PROBE_SECONDS):
        return "running (hears the queue)"
    if getattr(listener, "ident", None) is not None and hasattr(listener, "join"):
        threading.Thread(target=_end_listener, args=(listener,), name="notify-emergency-listener-reaper",
                         daemon=True).start()
    manager.thread = sio.server.start_background_task(manager._thread)
    return "replaced (the old one was asleep in its reconnect back-off)"


#: How long the old listener is pressed to end (python-socketio's back-off sleeps up to 60 s).
REAP_SECONDS = 120.0


def _end_listener(listener: threading.Thread) -> None:
    """End a replaced listener: an asynchronous ``SystemExit``, raised again until the thread is
    gone. One lands when its sleep ends or its read returns, but python-socketio's listener
    swallows everything while it decodes a packet (a bare ``except``), and a survivor would
    share the manager's pub/sub client with its replacement, each reconnecting it under the
    other every second, for as long as the worker lives."""
    deadline = time.monotonic() + REAP_SECONDS
    ident = listener.ident
    while ident is not None and listener.is_alive() and time.monotonic() < deadline:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(SystemExit))
        listener.join(0.2)
    if listener.is_alive():
        log.warning("flask-notify-emergency: a replaced Socket.IO queue listener is still running after %gs",
                    REAP_SECONDS)


def wake_queue_listener(ext: Any, actor: str = "monitor", source: str = "monitor",
                        event_id: int | None = None) -> dict[str, Any]:
    """Wake this process's Socket.IO queue listener if it sleeps in its reconnect back-off
    while the queue answers (:func:`wake_listener`); nothing else is touched."""
    sio = ext.socketio
    manager = queue_manager(sio) if sio is not None else None
    if manager is None:
        result = _result("wake-queue-listener", "skipped", note="no Socket.IO message queue in this process")
    else:
        try:
            result = _result("wake-queue-listener", "ok", listener=wake_listener(sio, manager, ext.namespace))
        except Exception as exc:
            result = _result("wake-queue-listener", "failed", error=f"{type(exc).__name__}: {exc}")
    audit_action(ext, actor, "wake-queue-listener", source, None, result, event_id)
    return result


def half_open_breaker(ext: Any, actor: str = "monitor", source: str = "monitor",
                      event_id: int | None = None) -> dict[str, Any]:
    """Let probes through an open breaker now (a closed one is left alone)."""
    before = ext.breaker.current
    if before != "open":
        result = _result("half-open-breaker", "skipped", breaker=before, note=f"the breaker is {before}")
    else:
        ext.breaker.half_open()
        result = _result("half-open-breaker", "ok", before=before, breaker=ext.breaker.current)
    audit_action(ext, actor, "half-open-breaker", source, None, result, event_id)
    return result


def clear_sessions(ext: Any, actor: str = "monitor", problematic_only: bool = True, source: str = "cli",
                   event_id: int | None = None) -> dict[str, Any]:
    """Clear the extension's server-side real-time session state.

    "Problematic" means, concretely:

    * a **socket of a user who no longer exists** (the user loader finds no such id): it is
      disconnected;
    * a **connection-registry entry with no live socket behind it** (a worker died before its
      disconnect handler ran, so ``send()`` keeps trying a socket nobody listens on). With
      the memory backend this process holds every socket, so an entry whose count differs
      from the live sockets here is corrected. With Redis the registry spans workers and
      one process cannot see the others' sockets, so only malformed entries (count <= 0)
      count as problematic.

    ``problematic_only=False`` resets the whole registry and disconnects every socket of
    this process: clients reconnect and register again; meanwhile ``send()`` treats their
    users as offline and the fallbacks deliver (nothing is lost). The host's own login
    sessions (cookies, a server-side session store) are never touched.
    """
    sio = ext.socketio
    live: dict[str, list[str]] = {}
    for sid, uid in list((getattr(ext, "connected_sids", {}) or {}).items()):
        live.setdefault(uid, []).append(sid)
    disconnected: list[str] = []
    exists = ext.dispatcher.user_exists
    for uid, sids in live.items():
        gone = False
        if exists is not None:
            try:
                gone = not exists(uid)
            except Exception:  # cannot tell (database down): leave the socket alone
                gone = False
        if (gone or not problematic_only) and sio is not None:
            for sid in sids:
                try:
                    sio.server.disconnect(sid, namespace=ext.namespace)
                    disconnected.append(sid)
                except Exception as exc:
                    log.warning("flask-notify-emergency: could not disconnect %s: %s", sid, exc)
    # re-read the live sockets: a disconnect handler that already ran has closed its entry
    live_now: dict[str, int] = {}
    for uid in list((getattr(ext, "connected_sids", {}) or {}).values()):
        live_now[uid] = live_now.get(uid, 0) + 1
    registry = ext.state.connection_registry()
    corrected: list[str] = []
    for uid, count in registry.items():
        want = live_now.get(uid, 0) if problematic_only else 0
        if problematic_only and ext.state.backend != "memory":
            stale = count <= 0  # other workers' sockets are invisible from here
        else:
            stale = count != want
        if not stale:
            continue
        ext.state.forget_connection(uid)
        for _ in range(want):
            ext.state.connection_opened(uid)
        corrected.append(uid)
    result = _result("clear-sessions", "ok", problematic_only=problematic_only,
                     disconnected_sockets=len(disconnected), registry_entries_cleared=len(corrected),
                     users=sorted(corrected)[:100], registry_before=len(registry),
                     note=None if ext.state.backend == "memory" or not problematic_only else
                     "Redis registry: other workers' sockets are not visible here; use the full clear "
                     "to reset it (clients re-register as they reconnect)")
    audit_action(ext, actor, "clear-sessions", source, {"problematic_only": problematic_only}, result, event_id)
    return result


def run_service_command(ext: Any, name: str, actor: str = "monitor", source: str = "cli",
                        event_id: int | None = None) -> dict[str, Any]:
    """Run one operator command of ``NOTIFY_EMERGENCY_SERVICE_COMMANDS`` (argv, no shell).

    Killed with its whole process group after ``SERVICE_COMMAND_TIMEOUT`` seconds; its exit
    code, output (cut to 20,000 characters each) and duration are returned and audited.
    """
    cfg = ext.app.config
    commands = cfg["NOTIFY_EMERGENCY_SERVICE_COMMANDS"] or {}
    if not commands:
        raise RecoveryError("no operator commands are configured: set NOTIFY_EMERGENCY_SERVICE_COMMANDS, "
                            "e.g. {'restart-web': ['systemctl', 'restart', 'web']}.")
    if name not in commands:
        raise RecoveryError(f"unknown operator command {name!r}: configured are {', '.join(sorted(commands))}.")
    argv = list(commands[name])
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise RecoveryError(f"NOTIFY_EMERGENCY_SERVICE_COMMANDS[{name!r}] must be a non-empty list of "
                            f"non-empty strings (an argv, not a shell line); got {argv!r}.")
    timeout = float(cfg["NOTIFY_EMERGENCY_SERVICE_COMMAND_TIMEOUT"])
    start = time.perf_counter()
    timed_out = False
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # its own group: a timeout kills its children too
    except OSError as exc:
        result = _result("run-service-command", "failed", name=name, argv=argv, returncode=None, stdout="",
                         stderr="", timed_out=False, duration_ms=0.0,
                         error=f"could not start {argv[0]!r}: {exc.strerror or exc}")
        audit_action(ext, actor, "run-service-command", source, {"name": name, "argv": argv}, result, event_id)
        return result
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    duration = round((time.perf_counter() - start) * 1000, 1)
    ok = not timed_out and proc.returncode == 0
    error = (f"killed after {timeout:g}s (NOTIFY_EMERGENCY_SERVICE_COMMAND_TIMEOUT)" if timed_out
             else None if ok else f"exited with status {proc.returncode}")
    result = _result("run-service-command", "ok" if ok else "failed", name=name, argv=argv,
                     returncode=proc.returncode, stdout=_text(out), stderr=_text(err), timed_out=timed_out,
                     duration_ms=duration, error=error)
    audit_action(ext, actor, "run-service-command", source, {"name": name, "argv": argv}, result, event_id)
    return result


def _text(data: bytes | None) -> str:
    text = (data or b"").decode("utf-8", errors="replace")
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n[output cut]"

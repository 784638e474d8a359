"""Recovery actions every serving worker runs when one process asks for them.

Some actions only make sense inside the process that holds the sockets: reconnecting the
Socket.IO message-queue client, disconnecting sockets so browsers connect afresh, clearing
the connection registry of sockets that died. ``flask emergency restart-websockets`` and
``clear-sessions`` run in a CLI process that holds none, and the monitor asks every worker to
``wake-queue-listener`` while real time fails with the queue answering, so they write a
``cluster_action`` switch; the shared state spreads it like any switch (Redis pub/sub, or the
database refresh), and each serving worker runs the action on itself, audited with its
process id.

With the Redis backend each worker also writes its result to
``<prefix>:cluster-action:<request id>:<process id>`` (:data:`RESULT_TTL` seconds), and
:func:`wait_for_results` waits until every worker that reports its mode (see
:mod:`.worker_mode`) has answered, so the command can name each worker that failed or did
not answer. With the memory backend there is no shared place for answers: workers pick the
request up from the database and audit what they did.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from ..models import utcnow
from . import actions as recovery_actions
from .worker_mode import REPORT_TTL, worker_reports

log = logging.getLogger("flask_notify_emergency")
KEY = "cluster_action"
ACTIONS = ("restart-websockets", "clear-sessions", "clear-problematic-sessions", "wake-queue-listener")
#: Seconds a worker's answer stays in Redis.
RESULT_TTL = 600


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
    result: dict[str, Any]
    try:
        with ext.app.app_context():
            if action == "restart-websockets":
                result = recovery_actions.restart_websockets(ext, actor=actor, source="cluster")
            elif action == "wake-queue-listener":
                result = recovery_actions.wake_queue_listener(ext, actor=actor, source="cluster")
            elif action in ("clear-sessions", "clear-problematic-sessions"):
                result = recovery_actions.clear_sessions(ext, actor=actor, source="cluster",
                                                         problematic_only=action == "clear-problematic-sessions")
            else:
                result = {"ok": False, "outcome": "failed", "error": f"unknown action {action!r}"}
    except Exception as exc:  # one worker's failure must not stop the listener; it is in the log
        log.exception("flask-notify-emergency: cluster action %s failed in this worker", action)
        result = {"ok": False, "outcome": "failed", "error": f"{type(exc).__name__}: {exc}"}
    _answer(ext, value, result)


def _result_key(ext: Any, request_id: str, process_id: str = "*") -> str:
    return f"{ext.state.prefix}:cluster-action:{request_id}:{process_id}"


def _redis(ext: Any) -> Any:
    import redis

    return redis.Redis.from_url(ext.state.url, socket_timeout=2.0, socket_connect_timeout=2.0)


def _answer(ext: Any, value: dict[str, Any], result: dict[str, Any]) -> None:
    """Tell the asking process what this worker's run gave (Redis backend)."""
    if getattr(ext.state, "backend", "memory") != "redis":
        return
    body = {"process_id": ext.state.process_id, "host": socket.gethostname(), "pid": os.getpid(),
            "action": value.get("action"), "ok": bool(result.get("ok")), "outcome": result.get("outcome"),
            "error": result.get("error"), "steps": result.get("steps"), "at": time.time()}
    try:
        client = _redis(ext)
        try:
            client.set(_result_key(ext, str(value.get("id")), ext.state.process_id),
                       json.dumps(body, default=str), ex=RESULT_TTL)
        finally:
            client.close()
    except Exception as exc:  # the asker will name this worker as not answering
        log.warning("flask-notify-emergency: could not report the cluster action's result: %s", exc)


def wait_for_results(ext: Any, value: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds for every reporting worker's answer to ``value``.

    Returns ``ok`` (every expected worker answered and succeeded), ``workers`` (one entry per
    worker: its answer, or ``answered: False``) and ``detail``.
    """
    if getattr(ext.state, "backend", "memory") != "redis":
        return {"ok": True, "workers": [],
                "detail": "memory backend: workers pick the request up from the database within "
                          f"{ext.app.config['NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS']}s and audit what they did; "
                          "their results cannot be collected here"}
    request_id = str(value["id"])
    try:
        expected = {w["process_id"]: w for w in worker_reports(ext)}
    except Exception as exc:
        return {"ok": False, "workers": [], "detail": f"cannot read the workers from Redis ({type(exc).__name__}: "
                f"{exc}); check NOTIFY_EMERGENCY_REDIS_URL and that Redis is up"}
    answers: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    client = _redis(ext)
    try:
        while True:
            keys = list(client.scan_iter(_result_key(ext, request_id), count=500))
            for raw in client.mget(keys) if keys else []:
                if raw:
                    answer = json.loads(raw)
                    answers[answer["process_id"]] = answer
            if set(expected) <= set(answers) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    except Exception as exc:
        return {"ok": False, "workers": list(answers.values()),
                "detail": f"lost Redis while waiting for the workers ({type(exc).__name__}: {exc})"}
    finally:
        client.close()
    workers: list[dict[str, Any]] = []
    for process_id in sorted(set(expected) | set(answers)):
        if process_id in answers:
            workers.append({**answers[process_id], "answered": True})
        else:
            report = expected[process_id]
            workers.append({"process_id": process_id, "host": report.get("host"), "pid": report.get("pid"),
                            "answered": False, "ok": False,
                            "error": f"no answer within {timeout:g}s (stuck, or gone: a stopped worker "
                                     f"stops being listed within {REPORT_TTL}s)"})
    failed = [w for w in workers if not w["ok"]]
    detail = (f"{len(workers) - len(failed)} of {len(workers)} workers succeeded" if workers
              else "no serving worker reports to Redis (none running, or none has started)")
    return {"ok": not failed, "workers": workers, "detail": detail}


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

"""Each serving worker reports the delivery mode it acts on, so ``verify-rollback`` can tell
that every worker -- not just the database -- switched.

With the Redis backend a worker writes ``<prefix>:worker-mode:<process_id>`` (JSON: mode,
paused services, host, pid, time) with a TTL of :data:`REPORT_TTL` seconds

* as soon as its state listener applies a change of ``mode`` or ``paused`` (pub/sub), and
* every :data:`HEARTBEAT` seconds from a small thread, so a live worker's report stays.

Reporting starts with a worker's first real request (:class:`.workers.WorkerStart`), so CLI
processes (which serve none) never report; a worker that stops reports nothing and its key
expires. Nothing runs on the request path. With the memory
backend there is no shared place to report to: every worker re-reads the database switch
within ``NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS``, and the check says so.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
from typing import Any

log = logging.getLogger("flask_notify_emergency")

REPORT_TTL = 120
HEARTBEAT = 30.0


def _client(ext: Any) -> Any:
    import redis

    return redis.Redis.from_url(ext.state.url, socket_timeout=1.0, socket_connect_timeout=1.0)


class WorkerModeReporter:
    """Writes this worker's view of the switches to Redis."""

    def __init__(self, ext: Any) -> None:
        self.ext = ext
        self.key = f"{ext.state.prefix}:worker-mode:{ext.state.process_id}"
        self._client: Any = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Report now, on every change of mode or pause, and every HEARTBEAT seconds."""
        self.ext.state.on_change(self._changed)
        atexit.register(self.withdraw)
        self.report()
        threading.Thread(target=self._heartbeat, name="notify-emergency-worker-mode", daemon=True).start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            self.report()

    def _changed(self, key: str, value: Any) -> None:
        if key in ("mode", "paused"):
            self.report()

    def report(self) -> None:
        state = self.ext.state
        body = {"mode": state.get("mode", "normal") or "normal", "paused": dict(state.get("paused") or {}),
                "host": socket.gethostname(), "pid": os.getpid(), "process_id": state.process_id,
                "at": time.time()}
        try:
            if self._client is None:
                self._client = _client(self.ext)
            self._client.set(self.key, json.dumps(body), ex=REPORT_TTL)
        except Exception as exc:  # reporting must never break the worker
            log.debug("flask-notify-emergency: could not report the worker's mode: %s", exc)

    def withdraw(self) -> None:
        self._stop.set()
        try:
            if self._client is not None:
                self._client.delete(self.key)
        except Exception:
            pass


def init_app(app: Any, ext: Any) -> None:
    """Start reporting on the first request (Redis backend only)."""
    if getattr(ext.state, "backend", "memory") != "redis":
        return
    reporter = WorkerModeReporter(ext)
    ext.worker_mode_reporter = reporter
    ext.worker_start.add(reporter.start)


def worker_reports(ext: Any) -> list[dict[str, Any]]:
    """Every live worker's last report (empty with the memory backend)."""
    if getattr(ext.state, "backend", "memory") != "redis":
        return []
    client = _client(ext)
    try:
        keys = list(client.scan_iter(f"{ext.state.prefix}:worker-mode:*", count=500))
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    now = time.time()
    out = []
    for raw in values:
        if raw:
            data = json.loads(raw)
            data["age_seconds"] = round(now - float(data.get("at", now)), 1)
            out.append(data)
    return sorted(out, key=lambda d: d.get("process_id", ""))


def check_workers(ext: Any, mode: str, realtime_paused: bool, timeout: float = 15.0) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds until every reporting worker acts on ``mode``."""
    if getattr(ext.state, "backend", "memory") != "redis":
        refresh = ext.app.config["NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS"]
        return {"name": "workers", "ok": True, "workers": [],
                "detail": f"memory backend: each worker re-reads the mode from the database within {refresh}s"}
    deadline = time.monotonic() + timeout
    while True:
        try:
            reports = worker_reports(ext)
        except Exception as exc:
            return {"name": "workers", "ok": False, "workers": [], "detail": f"cannot read worker reports: {exc}"}
        behind = [r for r in reports if r.get("mode") != mode
                  or bool((r.get("paused") or {}).get("realtime")) != realtime_paused]
        if not behind or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if behind:
        names = ", ".join(f"{r['process_id']} on {r['host']} ({r['mode']}, {r['age_seconds']}s ago)" for r in behind)
        detail = (f"{len(behind)} of {len(reports)} workers still report another mode: {names}. A worker "
                  f"that is gone stops being listed within {REPORT_TTL}s.")
    elif reports:
        detail = f"all {len(reports)} reporting workers act on '{mode}'"
    else:
        detail = "no worker has reported yet (none running, or none has served a request)"
    return {"name": "workers", "ok": not behind, "workers": reports, "detail": detail}

"""The example app as gunicorn serves it in the chaos suite: ``gunicorn bench.chaos.wsgi:app``.

Config from ``$CHAOS_CONFIG`` (JSON). Adds one route of its own, ``POST /chaos/raw-emit``: a
plain Flask-SocketIO emit to a user's room with no extension in the path (no row, no
acknowledgement bookkeeping, no fallback), the anchor the throughput comparison is made
against. It answers only with the run's token in ``X-Chaos-Token``.

With ``CHAOS_TRACE_TICKS=1`` each monitor tick this worker runs is written to its log as one
JSON line (``tick {...}``): status, the classification and the health findings, to read
what the monitor saw during a run.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for path in (ROOT, os.path.join(ROOT, "examples")):
    if path not in sys.path:
        sys.path.insert(0, path)

from flask import abort, request  # noqa: E402

from app import create_app  # noqa: E402
from flask_notify_emergency.delivery import EVENT  # noqa: E402

CONFIG = json.loads(os.environ.get("CHAOS_CONFIG", "{}"))
TOKEN = os.environ.get("CHAOS_TOKEN", "")
app, socketio = create_app(CONFIG)
if os.environ.get("CHAOS_TRACE_TICKS") == "1":
    import time

    def _trace(result: dict) -> None:
        health = result.get("health") or {}
        c = result.get("classification") or {}
        line = {"at": round(time.time(), 2), "status": result.get("status"), "failing": health.get("failing"),
                "health": health.get("status"), "woke": health.get("woke_listeners"),
                "type": c.get("failure_type"), "level": c.get("level"), "reason": (c.get("reason") or "")[:200],
                "judged": (health.get("evidence") or {}).get("judged_by"),
                "probe": {k: v for k, v in ((health.get("evidence") or {}).get("probe") or {}).items()
                          if k in ("ran", "ok", "error")},
                "event": (result.get("event") or {}).get("id"), "note": result.get("note"),
                "streak": result.get("healthy_streak")}
        print("tick " + json.dumps(line, default=str), file=sys.stderr, flush=True)

    app.extensions["notify_emergency"].monitor.tick_listeners.append(_trace)
ROOM_PREFIX = app.config["NOTIFY_EMERGENCY_USER_ROOM_PREFIX"]
NAMESPACE = app.config["NOTIFY_EMERGENCY_SOCKETIO_NAMESPACE"]


@app.route("/chaos/raw-emit", methods=["POST"])
def chaos_raw_emit() -> tuple[str, int]:
    if not TOKEN or request.headers.get("X-Chaos-Token") != TOKEN:
        abort(403)
    user_id = request.form["user_id"]
    payload = {"id": -int(request.form["seq"]), "title": request.form["title"], "message": "raw",
               "priority": "normal"}
    socketio.emit(EVENT, payload, to=f"{ROOM_PREFIX}{user_id}", namespace=NAMESPACE)
    return "", 204


@app.route("/chaos/send", methods=["POST"])
def chaos_send() -> tuple[str, int]:
    """What a host's route does: ``notify.send()``; 201 with the id, 400 when refused."""
    if not TOKEN or request.headers.get("X-Chaos-Token") != TOKEN:
        abort(403)
    try:
        nid = app.extensions["demo"]["notify"].send(request.form["user_id"], request.form["title"], "chaos")
    except ValueError as exc:
        return str(exc), 400
    return str(nid), 201

"""A real, acknowledged probe notification: evidence that the real-time path delivers now.

Rates measured over stored deliveries cannot recover while real time is paused (emergency
mode routes everything to the fallbacks), so the monitor asks the path itself: it stores a
probe row for one connected user, emits it over Socket.IO exactly as a notification (room
``user:<id>``, through the message queue when there is one), and waits up to
``ACK_TIMEOUT`` for the browser's acknowledgement to mark the row delivered, in whichever
worker holds the socket. The browser script acknowledges a probe (``data.probe``) without
showing it.

A probe row is never shown and never handed to the fallbacks: it expires when the wait
ends, its real-time deadline lies beyond that so no sweeper releases it, and it is deleted
afterwards, acknowledged or not.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any

import sqlalchemy as sa

from ..models import utcnow

CATEGORY = "probe"
TITLE = "Connection check"


def probe_targets(ext: Any) -> list[str]:
    """Users the connection registry holds as connected (any worker)."""
    try:
        return sorted(ext.state.connection_registry())
    except Exception:
        return []


def send_probe(ext: Any, timeout: float | None = None, user_id: str | None = None) -> dict[str, Any]:
    """Probe the real-time path with one acknowledged notification.

    Returns ``{"ran": False, "reason"}`` when there is nobody to ask (no notifier, or no
    connected user), else ``{"ran": True, "ok", "user_id", "round_trip_ms" | "error"}``.
    """
    if ext.notifier is None:
        return {"ran": False, "reason": "no real-time notifier"}
    targets = [user_id] if user_id else probe_targets(ext)
    if not targets:
        return {"ran": False, "reason": "no connected user to probe"}
    uid = random.choice(targets)
    wait = float(timeout if timeout is not None else ext.app.config["NOTIFY_EMERGENCY_ACK_TIMEOUT"])
    now = utcnow()
    nid = ext.store.create({
        "user_id": uid, "audience": "probe", "title": TITLE, "message": "Checking the live connection.",
        "priority": "low", "category": CATEGORY, "data": {"probe": True}, "created_at": now,
        "delivered": False, "attempts": 1, "expires_at": now + dt.timedelta(seconds=wait),
        "realtime_deadline": now + dt.timedelta(seconds=3 * wait + 5)})
    started = time.perf_counter()
    try:
        payload = ext.store.payloads([nid])[nid]
        payload.pop("user_id", None)
        ext.notifier.deliver(uid, payload)
        acked = _wait_for_ack(ext, nid, started + wait)
        result: dict[str, Any] = {"ran": True, "ok": acked, "user_id": uid}
        if acked:
            result["round_trip_ms"] = round((time.perf_counter() - started) * 1000, 1)
        else:
            result["error"] = f"no acknowledgement within {wait:g}s"
    except Exception as exc:
        result = {"ran": True, "ok": False, "user_id": uid, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        _delete(ext, nid)
    return result


def _wait_for_ack(ext: Any, nid: int, deadline: float) -> bool:
    t = ext.models.Notification.__table__
    while True:
        with ext.engine.connect() as conn:
            if conn.execute(sa.select(t.c.delivered).where(t.c.id == nid)).scalar():
                return True
        if time.perf_counter() >= deadline:
            return False
        time.sleep(0.05)


def _delete(ext: Any, nid: int) -> None:
    t = ext.models.Notification.__table__
    try:
        with ext.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.id == nid))
    except Exception:  # it expired anyway: never claimed, never released
        pass

"""Recovery actions on the undelivered backlog: replay it after a recovery, clear what is stuck.

Neither ever loses a notification a user could still receive: replay re-offers rows over
the socket (unacknowledged ones return to the fallbacks through the sweep), clearing hands
stuck rows to the fallbacks, and only rows past their expiry are deleted, after a JSON
backup of each has been written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa

from .. import signals
from ..delivery import SocketIONotifier
from ..models import notification_payload, utcnow
from .actions import audit_action

#: Rows looked at per run (the rest wait for the next run).
MAX_ROWS = 10_000


def _claimable(t: sa.Table, now: dt.datetime) -> Any:
    return sa.and_(t.c.delivered == sa.false(),
                   sa.or_(t.c.realtime_deadline.is_(None), t.c.realtime_deadline < now),
                   sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now))


def replay_backlog(ext: Any, rate: int | None = None, actor: str = "monitor", source: str = "monitor",
                   event_id: int | None = None, limit: int | None = None,
                   stop: threading.Event | None = None) -> dict[str, Any]:
    """Re-offer undelivered rows of connected users over the socket, at most ``rate`` per
    second (``NOTIFY_EMERGENCY_REPLAY_RATE``), so a recovery is not a thundering herd; mark
    every other waiting user pending, so their next page or poll gets the rows.

    A re-offered row gets a fresh acknowledgement deadline; if no ack comes, the sweep hands
    it back to the fallbacks. Paused ``replay`` service: nothing is done.
    """
    cfg = ext.app.config
    rate = int(rate or cfg["NOTIFY_EMERGENCY_REPLAY_RATE"])
    if rate < 1:
        raise ValueError("rate must be at least 1 notification per second.")
    limit = int(limit or min(MAX_ROWS, rate * 60))
    paused = ext.control.paused()
    if paused.get("replay"):
        result = {"ok": True, "action": "replay-backlog", "outcome": "skipped", "note": "the replay service is paused"}
        audit_action(ext, actor, "replay-backlog", source, {"rate": rate}, result, event_id)
        return result

    mode = ext.control.read("mode", "normal") or "normal"
    live = (mode == "normal" and not paused.get("realtime") and isinstance(ext.notifier, SocketIONotifier)
            and ext.breaker.current == "closed")
    t = ext.models.Notification.__table__
    now = utcnow()
    with ext.engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(_claimable(t, now)).order_by(t.c.id).limit(limit)).all()
    ack = float(cfg["NOTIFY_EMERGENCY_ACK_TIMEOUT"])
    offered, failed = 0, 0
    pending: set[str] = set()
    interval = 1.0 / rate
    next_at = time.monotonic()
    for row in rows:
        uid = str(row.user_id)
        if not (live and ext.state.is_connected(uid)):
            pending.add(uid)
            continue
        wait = next_at - time.monotonic()
        if wait > 0:
            if stop is None:
                time.sleep(wait)
            elif stop.wait(wait):
                break  # asked to stop: what was not offered stays claimable
        next_at = max(next_at, time.monotonic()) + interval
        deadline = utcnow() + dt.timedelta(seconds=ack)
        with ext.engine.begin() as conn:
            took = conn.execute(t.update().where(t.c.id == row.id, _claimable(t, utcnow()))
                                .values(realtime_deadline=deadline, attempts=t.c.attempts + 1)).rowcount
        if not took:
            continue  # claimed meanwhile by a page, a poll or another worker
        try:
            ext.notifier.deliver(uid, dict(notification_payload(row), user_id=uid))
            offered += 1
        except Exception:  # the socket failed again: the fallbacks take the row at once
            ext.store.release_realtime([int(row.id)])
            pending.add(uid)
            failed += 1
    for uid in pending:
        ext.state.mark_pending(uid)
    if offered:
        ext.dispatcher.start_sweeper()  # unacknowledged offers go back to the fallbacks
    result = {"ok": True, "action": "replay-backlog", "outcome": "ok", "rows_seen": len(rows),
              "offered": offered, "offer_failures": failed, "users_marked_pending": len(pending),
              "rate_per_second": rate, "realtime": live, "mode": mode}
    audit_action(ext, actor, "replay-backlog", source, {"rate": rate, "limit": limit}, result, event_id)
    return result


def clear_queues(ext: Any, actor: str = "monitor", source: str = "cli",
                 event_id: int | None = None) -> dict[str, Any]:
    """Clear what is stuck in the delivery queue, after a JSON backup of every row touched.

    * rows whose real-time acknowledgement deadline passed without an ack (their worker
      died, or the sweep is behind) are **released** to the fallbacks: the deadline is
      cleared and ``notification_fallback`` fires with the whole notification (reason
      ``queue-cleared``), so the user's next page or poll gets them;
    * undelivered rows past their ``expires_at`` (no user can receive them any more) are
      **deleted**.

    Nothing is cleared unless the backup file was written first. Undelivered rows that can
    still reach their user are never deleted.
    """
    t = ext.models.Notification.__table__
    now = utcnow()
    stuck_q = sa.select(t).where(t.c.delivered == sa.false(), t.c.realtime_deadline.is_not(None),
                                 t.c.realtime_deadline < now,
                                 sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now))
    expired_q = sa.select(t).where(t.c.delivered == sa.false(), t.c.expires_at.is_not(None), t.c.expires_at <= now)
    with ext.engine.connect() as conn:
        stuck = [dict(r._mapping) for r in conn.execute(stuck_q.order_by(t.c.id).limit(MAX_ROWS))]
        expired = [dict(r._mapping) for r in conn.execute(expired_q.order_by(t.c.id).limit(MAX_ROWS))]
    if not stuck and not expired:
        result = {"ok": True, "action": "clear-queues", "outcome": "ok", "backup": None, "released": 0,
                  "expired_deleted": 0, "note": "nothing stuck or expired"}
        audit_action(ext, actor, "clear-queues", source, None, result, event_id)
        return result
    path = _write_backup(ext, actor, {"released": stuck, "expired_deleted": expired})
    released = ext.store.release_realtime([int(r["id"]) for r in stuck]) if stuck else []
    # receivers (a host's SMS or pager fallback) need the text, as on every other path
    payloads = ext.store.payloads([nid for nid, _ in released])
    for nid, uid in released:
        signals.notification_fallback.send(ext.app, notification=payloads.get(nid) or {"id": nid, "user_id": uid},
                                           reason="queue-cleared")
    deleted = 0
    if expired:
        with ext.engine.begin() as conn:
            deleted = conn.execute(t.delete().where(
                t.c.id.in_([int(r["id"]) for r in expired]), t.c.delivered == sa.false(),
                t.c.expires_at.is_not(None), t.c.expires_at <= utcnow())).rowcount or 0
    result = {"ok": True, "action": "clear-queues", "outcome": "ok", "backup": path,
              "released": len(released), "expired_deleted": int(deleted),
              "more": len(stuck) >= MAX_ROWS or len(expired) >= MAX_ROWS}
    audit_action(ext, actor, "clear-queues", source, None, result, event_id)
    return result


def _write_backup(ext: Any, actor: str, rows: dict[str, list[dict[str, Any]]]) -> str:
    """Write the rows about to be cleared as JSON (0600, written then renamed); its path."""
    directory = ext.app.config["NOTIFY_EMERGENCY_BACKUP_DIR"]
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(directory, f"clear-queues-{stamp}-{uuid.uuid4().hex[:8]}.json")
    document = {"kind": "clear-queues", "created_at": utcnow().isoformat() + "Z", "actor": actor,
                "table": ext.models.Notification.__tablename__,
                "counts": {k: len(v) for k, v in rows.items()}, "rows": rows}
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(document, f, default=_json_default, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat() + "Z"
    raise TypeError(f"cannot store {type(value).__name__} in a backup")

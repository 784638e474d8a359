"""``evaluate-drill``: a drill scored against the runbook's targets.

======================  =================================================================
criterion               passes when
======================  =================================================================
completed               the drill ran its full duration (not aborted, no error)
detection (MTTD)        the failure was seen, in under 5 minutes
recovery (MTTR)         everything was back, under 15 minutes after detection
users kept receiving    the probe notification is stored once, and reached its user once,
                        through a fallback (flash or poll): the only way while the drill ran
restored                real time, breaker, delivery mode and the drill's event all back
rollback rehearsal      (complete_rollback only) the rehearsal on the copy passed
======================  =================================================================

The probe is judged from the database when the evaluation runs, so a user who loads a page
after the drill still counts. The evaluation is stored with the drill and audited.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..models import utcnow
from .drills import DRILL_TYPES, get_drill, save_result

TARGET_DETECTION_SECONDS = 5 * 60
TARGET_RECOVERY_SECONDS = 15 * 60
FALLBACK_CHANNELS = ("flash", "poll")


def _criterion(name: str, ok: bool, detail: str, target: str | None = None) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, "target": target}


def probe_outcome(ext: Any, probe: dict[str, Any] | None) -> dict[str, Any]:
    """What became of the probe notification: copies, delivered, channel."""
    if not probe:
        return {"ok": False, "detail": "no probe notification was sent (the drill stopped before it)"}
    t = ext.models.Notification.__table__
    with ext.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.delivered, t.c.channel, t.c.delivered_at).where(
            t.c.user_id == probe["user_id"], t.c.title == probe["title"])).all()
    copies = len(rows)
    row = next((r for r in rows if r.id == probe["notification_id"]), None)
    if row is None:
        return {"ok": False, "copies": copies, "detail": f"probe #{probe['notification_id']} is not stored"}
    delivered = bool(row.delivered)
    by_fallback = row.channel in FALLBACK_CHANNELS
    ok = copies == 1 and delivered and by_fallback
    if copies != 1:
        detail = f"{copies} copies of the probe are stored, expected exactly 1"
    elif not delivered:
        detail = (f"probe #{row.id} has not reached user {probe['user_id']} yet: they have not loaded a page "
                  "or polled since; evaluate again after they do")
    elif not by_fallback:
        detail = f"probe #{row.id} arrived by {row.channel}, not by a fallback"
    else:
        detail = f"probe #{row.id} reached user {probe['user_id']} once, by {row.channel}"
    return {"ok": ok, "copies": copies, "delivered": delivered, "channel": row.channel, "detail": detail}


def evaluate_drill(ext: Any, drill_id: int, *, actor: str, source: str = "cli") -> dict[str, Any]:
    """Score drill ``drill_id``; ValueError if there is none or it is still running."""
    drill = get_drill(ext, drill_id)
    if drill is None:
        raise ValueError(f"no drill #{drill_id}: check --drill-id (execute-drill prints it).")
    result = dict(drill["result"])
    if result.get("status") == "running" or drill["ended_at"] is None:
        raise ValueError(f"drill #{drill_id} has not finished: evaluate it when execute-drill is done.")
    detection, recovery = result.get("detection_seconds"), result.get("recovery_seconds")
    restored = result.get("restored") or {}
    criteria = [
        _criterion("completed", result.get("status") == "completed",
                   f"status {result.get('status')}" + (f": {result['error']}" if result.get("error") else "")),
        _criterion("detection", detection is not None and detection < TARGET_DETECTION_SECONDS,
                   f"detected after {detection:.2f} s" if detection is not None else "the failure was never detected",
                   "MTTD < 5 min"),
        _criterion("recovery", recovery is not None and recovery < TARGET_RECOVERY_SECONDS,
                   f"restored {recovery:.2f} s after detection" if recovery is not None
                   else "not restored after a detection", "MTTR < 15 min"),
    ]
    probe = probe_outcome(ext, result.get("probe"))
    criteria.append(_criterion("users_kept_receiving", probe["ok"], probe["detail"], "probe delivered exactly once"))
    criteria.append(_criterion("restored", bool(restored.get("all")),
                               ", ".join(f"{k} {'back' if v else 'NOT back'}" for k, v in restored.items() if k != "all")
                               + (f"; {result.get('deactivation')}" if result.get("deactivation") else "")
                               or "nothing recorded"))
    if "rollback" in DRILL_TYPES[drill["type"]].injects:
        rehearsal = result.get("rollback_rehearsal") or {}
        criteria.append(_criterion("rollback_rehearsal", bool(rehearsal.get("ok")),
                                   rehearsal.get("error") or ", ".join(
                                       f"{c['name']} {'ok' if c['ok'] else 'FAILED'}" for c in rehearsal.get("checks") or [])
                                   or "no rehearsal recorded"))
    passed = sum(1 for c in criteria if c["ok"])
    evaluation = {"ok": passed == len(criteria), "score": round(100 * passed / len(criteria)),
                  "passed": passed, "total": len(criteria), "criteria": criteria,
                  "evaluated_at": utcnow().isoformat() + "Z", "evaluated_by": actor}
    result["evaluation"] = evaluation
    save_result(ext, drill_id, result)
    ext.audit.record(actor, "evaluate-drill", source, {"drill_id": drill_id},
                     outcome="ok" if evaluation["ok"] else "failed",
                     detail=f"{passed}/{len(criteria)} criteria met", event_id=result.get("event_id"))
    return dict(drill, result=result, evaluation=evaluation)

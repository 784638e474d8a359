"""``evaluate-drill``: a drill scored against the runbook's targets.

======================  =================================================================
criterion               passes when
======================  =================================================================
completed               the drill ran to its end (not aborted, no error)
detected                the monitor opened an event of the drill's failure type while
                        the fault lasted
detection (MTTD)        the event's failure start to its detection, under 5 minutes
recovery (MTTR)         the event's detection to its resolution by the monitor, under 15
                        minutes
restored                the fault was taken back in every worker (its switch is clear)
======================  =================================================================

A ``complete_rollback`` drill is scored on its own criteria:

======================  =================================================================
criterion               passes when
======================  =================================================================
completed               the drill ran to its end (not aborted, no error)
rollback                ``rollback --confirm`` finished, in under 5 minutes (the runbook's
                        first five minutes)
fallback delivery       the probe notification reached the admin by a fallback (flash on
                        a page request), not the socket
restore                 ``restore --confirm`` finished, in under 15 minutes (the MTTR
                        target)
real time back          after the restore, real time is on in every worker and its canary
                        passes
restored                nothing of the drill is left to revert (no lease)
======================  =================================================================

MTTD and MTTR are read from the monitor's event when the evaluation runs (an event resolved
after the drill gave up waiting still counts). The evaluation is stored with the drill and
audited.
"""

from __future__ import annotations

from typing import Any

from ..models import utcnow
from ..respond import drill_faults, drill_lease, emergency
from .drills import DRILL_TYPES, get_drill, save_result, timing

TARGET_DETECTION_SECONDS = 5 * 60
TARGET_RECOVERY_SECONDS = 15 * 60
TARGET_ROLLBACK_SECONDS = 5 * 60
TARGET_RESTORE_SECONDS = 15 * 60


def _criterion(name: str, ok: bool, detail: str, target: str | None = None) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, "target": target}


def evaluate_drill(ext: Any, drill_id: int, *, actor: str, source: str = "cli") -> dict[str, Any]:
    """Score drill ``drill_id``; ValueError if there is none or it is still running."""
    drill = get_drill(ext, drill_id)
    if drill is None:
        raise ValueError(f"no drill #{drill_id}: check --drill-id (execute-drill prints it).")
    result = dict(drill["result"])
    if result.get("status") == "running" or drill["ended_at"] is None:
        raise ValueError(f"drill #{drill_id} has not finished: evaluate it when execute-drill is done.")
    kind = DRILL_TYPES.get(drill["type"])
    if kind is not None and kind.rollback:
        return _store(ext, drill_id, drill, result, _rollback_criteria(ext, drill_id, result), actor, source)
    expected = kind.failure_type if kind else result.get("expected_failure_type")
    event = emergency.get_event(ext, int(result["event_id"])) if result.get("event_id") else None
    times = timing(event)
    detection, recovery = times["detection_seconds"], times["recovery_seconds"]
    result.update(times)
    start = result.get("failure_start") or {}
    criteria = [
        _criterion("completed", result.get("status") == "completed",
                   f"status {result.get('status')}" + (f": {result['error']}" if result.get("error") else "")),
        _criterion("detected", bool(result.get("detected")),
                   f"monitor event #{event['id']} ({event['failure_type']}, level {event['level']})"
                   if event is not None and result.get("detected")
                   else f"the monitor opened no {expected} event while the fault lasted", f"a {expected} event"),
        _criterion("detection", bool(result.get("detected")) and detection is not None
                   and detection < TARGET_DETECTION_SECONDS,
                   f"detected {detection:.2f} s after the failure's start (from {start.get('from', 'its evidence')})"
                   if detection is not None else "never detected", "MTTD < 5 min"),
        _criterion("recovery", recovery is not None and recovery < TARGET_RECOVERY_SECONDS,
                   f"resolved by {event.get('resolved_by')} {recovery:.2f} s after detection"
                   if event is not None and recovery is not None
                   else "the monitor has not resolved it" if event is not None else "nothing to resolve",
                   "MTTR < 15 min"),
    ]
    fault = drill_faults.current(ext)
    clear = fault is None or fault.get("drill_id") != drill_id
    criteria.append(_criterion("restored", clear and bool((result.get("restored") or {}).get("all", True)),
                               "the fault was taken back in every worker" if clear
                               else "the fault switch is still set: run execute-drill's clean-up or wait for "
                                    "the monitor to revert it"))
    return _store(ext, drill_id, drill, result, criteria, actor, source)


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, (int, float)) else "-"


def _rollback_criteria(ext: Any, drill_id: int, result: dict[str, Any]) -> list[dict[str, Any]]:
    rolled, restored = result.get("rollback_seconds"), result.get("restore_seconds")
    probe = result.get("probe") or {}
    lease = ext.control.read(drill_lease.KEY)
    clear = not (isinstance(lease, dict) and lease.get("drill_id") == drill_id)
    return [
        _criterion("completed", result.get("status") == "completed",
                   f"status {result.get('status')}" + (f": {result['error']}" if result.get("error") else "")),
        _criterion("rollback", rolled is not None and rolled < TARGET_ROLLBACK_SECONDS,
                   f"rolled back to flash-only in {_seconds(rolled)} ({result.get('rollback_operation')})"
                   if rolled is not None else "the rollback did not finish", "rollback < 5 min"),
        _criterion("fallback delivery", bool(probe.get("ok")), probe.get("detail") or "no probe was sent",
                   "the probe is delivered by a fallback"),
        _criterion("restore", restored is not None and restored < TARGET_RESTORE_SECONDS,
                   f"restored real time in {_seconds(restored)} ({result.get('restore_operation')})"
                   if restored is not None else f"not restored: {result.get('restore_error') or 'not reached'}",
                   "restore < 15 min"),
        _criterion("real time back", bool(result.get("realtime_back")),
                   result.get("realtime_detail") or "not checked", "real-time delivery after the restore"),
        _criterion("restored", clear, "nothing left to revert" if clear
                   else "the drill's lease is still held: the monitor restores once real time's checks pass"),
    ]


def _store(ext: Any, drill_id: int, drill: dict[str, Any], result: dict[str, Any], criteria: list[dict[str, Any]],
           actor: str, source: str) -> dict[str, Any]:
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

"""The always-revert guard of drills, for a drill whose process dies.

A drill takes back the fault it injected (:mod:`.drill_faults`) in a ``finally`` block, which
covers an error and Ctrl-C but not ``kill -9``, an OOM kill or a lost host. So while it runs,
the drill holds a lease: the control switch ``drill_lease`` (in the database, like every
switch) names the drill, the faults it injected and ``until`` (epoch seconds). The drill
renews it (and the fault switch's own ``until``) while it runs and removes it when it has
taken its fault back.

The monitor calls :func:`revert_if_abandoned` on every tick: a lease past its ``until`` means
the drill's process is gone, so the monitor takes the fault back in every worker, marks the
drill ``abandoned`` and audits it. (Each worker has also taken the fault back by itself at
the fault switch's ``until``, even one that cannot hear the switch.) Events the monitor opened
for the fault stay the monitor's: it resolves them when its checks pass again. What this
layer cannot undo itself (a drill's rollback to flash-only delivery) the caller undoes with
``undo``: the monitor passes the rollback's ``restore``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import sqlalchemy as sa

from ..models import utcnow
from . import drill_faults, emergency

KEY = "drill_lease"


def lease_seconds(ext: Any) -> float:
    """How long a lease lasts without renewal: three monitor intervals (at least 5 s)."""
    return max(5.0, 3 * float(ext.app.config["NOTIFY_EMERGENCY_MONITOR_INTERVAL"]))


def hold(ext: Any, drill_id: int, *, injected: list[str], snapshot: dict[str, Any], actor: str,
         event_id: int | None = None) -> None:
    """Take or renew the lease of drill ``drill_id`` (with what it has injected so far)."""
    ext.control.write(KEY, {"drill_id": drill_id, "injected": list(injected), "snapshot": snapshot,
                            "event_id": event_id, "actor": actor, "until": time.time() + lease_seconds(ext)},
                      actor)


def release(ext: Any, drill_id: int, actor: str) -> None:
    """The drill restored everything itself: drop its lease (only its own)."""
    lease = ext.control.read(KEY)
    if isinstance(lease, dict) and lease.get("drill_id") == drill_id:
        ext.control.write(KEY, None, actor)


def revert_if_abandoned(ext: Any, actor: str = "monitor", now: float | None = None,
                        undo: dict[str, Callable[[int], Any]] | None = None) -> dict[str, Any] | None:
    """Undo the injections of a drill whose lease ran out; what was done, or None.

    ``undo`` maps an injection this module cannot undo to a function (given the drill's id)
    that undoes it; a failing one is reported, and the lease stays for the next tick."""
    lease = ext.control.read(KEY)
    if not isinstance(lease, dict) or float(lease.get("until", 0)) > (time.time() if now is None else now):
        return None
    drill_id = lease.get("drill_id")
    snapshot = lease.get("snapshot") or {}
    injected = lease.get("injected") or []
    restored: dict[str, Any] = {}
    problems: list[str] = []
    faults = [i for i in injected if i in drill_faults.FAULTS]
    if faults:
        fault = drill_faults.current(ext)
        if fault is None or fault.get("drill_id") == drill_id:
            drill_faults.take_back(ext, actor)
        restored.update({f: True for f in faults})
    if "realtime" in injected:
        ext.control.set_paused("realtime", bool(snapshot.get("paused")), actor)
        restored["realtime"] = True
    if "breaker" in injected and snapshot.get("breaker") != "open":
        ext.breaker.close()
        restored["breaker"] = True
    for name, func in (undo or {}).items():
        if name in injected:
            try:
                restored[name] = func(int(drill_id or 0)) or True
            except Exception as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
    if problems:  # try again on the next tick; the drill stays running until then
        ext.audit.record(actor, "revert-abandoned-drill", "monitor", {"drill_id": drill_id}, outcome="failed",
                         detail="; ".join(problems))
        return {"drill_id": drill_id, "restored": restored, "problems": problems}
    event = emergency.current_event(ext)
    if lease.get("event_id") is not None and event and (
            event["id"] == lease.get("event_id")
            or (isinstance(event.get("evidence"), dict) and event["evidence"].get("drill_id") == drill_id)):
        try:
            emergency.deactivate(ext, resolved_by=actor, force=True, source="monitor",
                                 reason=f"drill #{drill_id} abandoned (its process stopped); injections reverted")
            restored["event"] = event["id"]
        except emergency.EmergencyError as exc:
            problems.append(str(exc))
    outcome = {"drill_id": drill_id, "restored": restored, "problems": problems}
    t = ext.models.Drill.__table__
    with ext.engine.begin() as conn:
        row = conn.execute(sa.select(t.c.result).where(t.c.id == drill_id)).first()
        if row is not None:
            result = dict(row[0] or {})
            result.update(status="abandoned", reverted_by=actor,
                          restored=dict(result.get("restored") or {}, all=not problems, **restored),
                          error="the drill's process stopped before taking its fault back; the monitor did")
            conn.execute(t.update().where(t.c.id == drill_id).values(result=result, ended_at=utcnow()))
    ext.control.write(KEY, None, actor)
    ext.audit.record(actor, "revert-abandoned-drill", "monitor", {"drill_id": drill_id},
                     outcome="ok" if not problems else "failed", detail="; ".join(problems) or None)
    return outcome

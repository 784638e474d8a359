"""Emergency mode and emergency events: the runbook's four levels, activation and deactivation.

The database holds the truth (an ``EmergencyEvent`` row and the ``mode`` switch); the shared
state tells every worker within a second. While emergency mode is on, every notification
goes through the fallbacks and pages show the emergency notice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from .. import signals
from ..detect import FAILURE_TYPES, LEVELS, Level, parse_level, run_health_checks  # noqa: F401 (the levels of an event)
from ..models import MAX_ROW_ID, utcnow


class EmergencyError(Exception):
    """An emergency action was refused; the message says why and what to do instead."""


def event_dict(row: Any) -> dict[str, Any]:
    """An event as JSON-ready data."""
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() + "Z" if v else None

    level = LEVELS.get(row.level)
    return {
        "id": row.id, "level": row.level, "level_name": level.name if level else str(row.level),
        "respond_within_minutes": int(level.respond_within.total_seconds() // 60) if level else None,
        "escalation": level.escalation if level else None,
        "failure_type": row.failure_type, "status": row.status, "reason": row.reason,
        "evidence": row.evidence, "affected_users": row.affected_users,
        "triggered_by": row.triggered_by, "started_at": iso(row.started_at),
        "detected_at": iso(row.detected_at), "acknowledged_at": iso(row.acknowledged_at),
        "acknowledged_by": row.acknowledged_by, "resolved_at": iso(row.resolved_at),
        "resolved_by": row.resolved_by, "actions": row.actions or [],
        "manual_intervention": bool(row.manual_intervention), "recovered": row.recovered,
    }


def _table(ext: Any) -> sa.Table:
    return ext.models.EmergencyEvent.__table__


def current_event(ext: Any) -> dict[str, Any] | None:
    """The newest open event, if any."""
    t = _table(ext)
    with ext.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.status == "open").order_by(t.c.id.desc()).limit(1)).first()
    return event_dict(row) if row else None


def get_event(ext: Any, event_id: int) -> dict[str, Any] | None:
    if not 0 < event_id <= MAX_ROW_ID:
        return None  # no row has it (and the database would refuse the number)
    t = _table(ext)
    with ext.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == event_id)).first()
    return event_dict(row) if row else None


def list_events(ext: Any, limit: int = 50, offset: int = 0, status: str | None = None) -> list[dict[str, Any]]:
    t = _table(ext)
    q = sa.select(t).order_by(t.c.id.desc()).limit(limit).offset(offset)
    if status:
        q = q.where(t.c.status == status)
    with ext.engine.connect() as conn:
        return [event_dict(r) for r in conn.execute(q)]


def open_event(ext: Any, *, level: int, failure_type: str, reason: str, triggered_by: str,
               evidence: dict[str, Any] | None = None, affected_users: int = 0,
               started_at: dt.datetime | None = None, manual: bool = False,
               detected_at: dt.datetime | None = None) -> dict[str, Any]:
    """Record a new emergency event (no mode change).

    ``detected_at`` defaults to now; ``started_at`` to the failure's start as the evidence
    log knows it (:mod:`..detect.evidence`: the earliest evidence since the last passing
    check, else that check), so MTTD is the time from start to detection.
    """
    if failure_type not in FAILURE_TYPES:
        raise ValueError(f"unknown failure type {failure_type!r}: use one of {', '.join(FAILURE_TYPES)}.")
    t = _table(ext)
    now = detected_at or utcnow()
    if started_at is None:
        started_at, start_kind = ext.evidence.failure_start_time(now)
        if start_kind is not None:
            evidence = dict(evidence or {}, failure_start={"at": started_at.isoformat() + "Z", "from": start_kind})
    with ext.engine.begin() as conn:
        result = conn.execute(t.insert().values(
            level=level, failure_type=failure_type, status="open", reason=reason, evidence=evidence,
            affected_users=affected_users, triggered_by=triggered_by, started_at=min(started_at, now),
            detected_at=now, actions=[], manual_intervention=manual))
    event = get_event(ext, int(result.inserted_primary_key[0]))
    assert event is not None
    signals.emergency_detected.send(ext.app, event=event)
    return event


def record_action(ext: Any, event_id: int, action: str, outcome: str, detail: Any = None,
                  actor: str | None = None) -> None:
    """Append an action and its outcome to an event's timeline."""
    t = _table(ext)
    with ext.engine.begin() as conn:
        row = conn.execute(sa.select(t.c.actions).where(t.c.id == event_id)).first()
        if row is None:
            return
        actions = list(row[0] or [])
        actions.append({"at": utcnow().isoformat() + "Z", "action": action, "outcome": outcome,
                        "detail": detail, "actor": actor})
        values: dict[str, Any] = {"actions": actions}
        if actor and actor != "monitor":
            values["manual_intervention"] = True
        conn.execute(t.update().where(t.c.id == event_id).values(**values))


def acknowledge_event(ext: Any, event_id: int, actor: str, source: str) -> dict[str, Any]:
    t = _table(ext)
    with ext.engine.begin() as conn:
        done = conn.execute(t.update().where(t.c.id == event_id, t.c.acknowledged_at.is_(None))
                            .values(acknowledged_at=utcnow(), acknowledged_by=actor)).rowcount
    if not done and get_event(ext, event_id) is None:
        raise EmergencyError(f"no emergency event #{event_id}.")
    ext.audit.record(actor, "acknowledge-event", source, {"event_id": event_id}, event_id=event_id)
    event = get_event(ext, event_id)
    assert event is not None
    return event


def resolve_event(ext: Any, event_id: int, resolved_by: str, recovered: bool,
                  resolved_at: dt.datetime | None = None) -> dict[str, Any] | None:
    t = _table(ext)
    with ext.engine.begin() as conn:
        conn.execute(t.update().where(t.c.id == event_id, t.c.status == "open").values(
            status="resolved", resolved_at=resolved_at or utcnow(), resolved_by=resolved_by, recovered=recovered))
    event = get_event(ext, event_id)
    if event is not None:
        signals.emergency_resolved.send(ext.app, event=event)
    return event


def activate(ext: Any, *, reason: str, triggered_by: str, level: Any = 1, failure_type: str = "manual",
             source: str = "cli", evidence: dict[str, Any] | None = None, affected_users: int = 0,
             actor: str | None = None) -> dict[str, Any]:
    """Switch the cluster into emergency mode and open an event.

    Returns the event, with ``already_active`` True when emergency mode was already on (the
    existing event is returned and nothing changes).
    """
    if not isinstance(reason, str) or not reason.strip():
        raise EmergencyError("a reason is required: say what failed, e.g. --reason \"socket queue down\".")
    number = parse_level(level)
    actor = actor or triggered_by
    existing = current_event(ext)
    mode = ext.control.read("mode", "normal") or "normal"
    if existing and mode in ("emergency", "legacy"):
        ext.audit.record(actor, "activate-emergency", source,
                         {"reason": reason, "level": number, "triggered_by": triggered_by},
                         outcome="noop", detail=f"already active (event #{existing['id']})",
                         event_id=existing["id"])
        return dict(existing, already_active=True)
    event = open_event(ext, level=number, failure_type=failure_type, reason=reason.strip(),
                       triggered_by=triggered_by, evidence=evidence, affected_users=affected_users,
                       manual=failure_type == "manual")
    if mode != "legacy":  # a rollback is stronger than emergency mode; keep it
        ext.control.set_mode("emergency", actor)
    record_action(ext, event["id"], "activate-emergency", "ok", {"mode": "emergency"}, actor)
    ext.audit.record(actor, "activate-emergency", source,
                     {"reason": reason, "level": number, "triggered_by": triggered_by,
                      "failure_type": failure_type}, event_id=event["id"])
    return dict(get_event(ext, event["id"]) or event, already_active=False)


def failing_checks(ext: Any) -> list[str]:
    """Names of health checks failing now."""
    report = run_health_checks(ext).to_dict()
    return sorted(name for name, check in report["checks"].items() if not check["ok"])


def deactivate(ext: Any, *, resolved_by: str, force: bool = False, reason: str | None = None,
               source: str = "cli", recovered: bool = True) -> dict[str, Any]:
    """Leave emergency mode. Refused while health checks fail, unless forced with a reason.

    The result's ``failing_checks`` names the checks that failed when it was decided (empty:
    all passed; None: a forced deactivation whose checks could not run), so a forced exit
    says whether it really overrode anything.
    """
    if not isinstance(resolved_by, str) or not resolved_by.strip():
        raise EmergencyError("say who resolved it: --resolved-by NAME.")
    mode = ext.control.read("mode", "normal") or "normal"
    event = current_event(ext)
    if mode != "emergency" and event is None:
        raise EmergencyError(f"emergency mode is not active (the delivery mode is '{mode}').")
    if force and not (reason and reason.strip()):
        raise EmergencyError("--force needs --reason: say why it is safe to leave emergency mode.")
    failing: list[str] | None
    if force:
        try:
            failing = failing_checks(ext)
        except Exception:  # forced: the checks' own failure must not stop the operator
            failing = None
    else:
        failing = failing_checks(ext)
        if failing:
            ext.audit.record(resolved_by, "deactivate-emergency", source, {"force": False},
                             outcome="refused", detail=f"checks failing: {', '.join(failing)}",
                             event_id=event["id"] if event else None)
            raise EmergencyError(
                f"refusing to leave emergency mode: these checks still fail: {', '.join(failing)}. "
                "Fix them, or use --force --reason \"...\" to override.")
    if mode == "emergency":
        ext.control.set_mode("normal", resolved_by)
    result: dict[str, Any] = {"mode": ext.control.read("mode", "normal"), "event": None,
                              "forced": force, "failing_checks": failing}
    if event is not None:
        record_action(ext, event["id"], "deactivate-emergency", "ok",
                      {"forced": force, "reason": reason, "failing_checks": failing}, resolved_by)
        result["event"] = resolve_event(ext, event["id"], resolved_by, recovered)
    detail = None
    if force:
        detail = (f"forced past failing checks: {', '.join(failing)}" if failing
                  else "forced; the checks were passing" if failing == [] else "forced; the checks could not run")
    ext.audit.record(resolved_by, "deactivate-emergency", source, {"force": force, "reason": reason},
                     detail=detail, event_id=event["id"] if event else None)
    return result

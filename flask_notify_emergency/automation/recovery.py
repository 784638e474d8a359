"""Automatic recovery: a plan per failure type, bounded retries, then escalation.

======================  ===============================================  ==========
failure type            steps (each attempt)                             verified by
======================  ===============================================  ==========
realtime_connection     restart_websockets, half_open_breaker            realtime
message_delivery        clear_queues, restart_websockets,                realtime
                        half_open_breaker
database_persistence    reconnect_database                               database
shared_state            reconnect_redis                                  redis
authentication          clear_sessions (problematic only)                sessions
resource_exhaustion     clear_queues                                     resources
overload                none, and never emergency mode: nothing is       --
                        broken, restarts would add load; the event
                        (level 3) and its alerts say so, and polling
                        clients are slowed (:mod:`..delivery.polling`)
security, manual        none: an operator decides                        --
======================  ===============================================  ==========

If ``NOTIFY_EMERGENCY_SERVICE_COMMANDS`` has a command named ``recover-<failure type>``
(e.g. ``recover-realtime_connection``), it runs as the plan's last step.

An attempt runs every step, then the plan's checks; none may fail. Up to
``RECOVERY_ATTEMPTS`` attempts, waiting ``RECOVERY_BACKOFF`` seconds before the second and
doubling each time. Each attempt is one entry on the event's timeline (outcome ok/failed),
each step one audit entry. When every attempt failed the plan **escalates**: an
``escalate`` entry on the event and an "escalated" alert one level more severe (see
:mod:`.alerts`). A recovered plan does not leave emergency mode: the monitor does that after
``HEALTHY_CHECKS_TO_RECOVER`` healthy checks in a row, or an operator with
``deactivate-emergency``.

The actions themselves live in :mod:`.recovery_actions` and :mod:`.backlog` and are
re-exported here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa

from ..communicate import alert_event, alert_unrecorded
from ..detect import Classification, HealthReport, classify, run_health_checks
from ..respond import (
    RecoveryError,
    audit_action,
    clear_queues,
    clear_sessions,
    emergency,
    half_open_breaker,
    reconnect_database,
    reconnect_redis,
    replay_backlog,
    restart_websockets,
    run_service_command,
)

log = logging.getLogger("flask_notify_emergency")


@dataclass(frozen=True)
class Plan:
    """The steps that repair one failure type and the checks that prove it worked."""

    steps: tuple[str, ...]
    verify: tuple[str, ...]


PLANS: dict[str, Plan] = {
    "realtime_connection": Plan(("restart_websockets", "half_open_breaker"), ("realtime",)),
    "message_delivery": Plan(("clear_queues", "restart_websockets", "half_open_breaker"), ("realtime",)),
    "database_persistence": Plan(("reconnect_database",), ("database",)),
    "shared_state": Plan(("reconnect_redis",), ("redis",)),
    "authentication": Plan(("clear_sessions",), ("sessions",)),
    "resource_exhaustion": Plan(("clear_queues",), ("resources",)),
}

#: The failure type of a slow but answering system: observed, never "repaired".
OVERLOAD = "overload"

Step = Callable[[Any, str, str, "int | None"], dict[str, Any]]
STEPS: dict[str, Step] = {
    "restart_websockets": lambda ext, actor, source, eid: restart_websockets(
        ext, actor, source, eid, disconnect_sockets=False),  # the client script would stay on polling
    "half_open_breaker": lambda ext, actor, source, eid: half_open_breaker(ext, actor, source, eid),
    "clear_queues": lambda ext, actor, source, eid: clear_queues(ext, actor, source, eid),
    "reconnect_database": lambda ext, actor, source, eid: reconnect_database(ext, actor, source, eid),
    "reconnect_redis": lambda ext, actor, source, eid: reconnect_redis(ext, actor, source, eid),
    "clear_sessions": lambda ext, actor, source, eid: clear_sessions(ext, actor, True, source, eid),
}


def _record(ext: Any, event_id: int | None, action: str, outcome: str, detail: Any, actor: str) -> None:
    if event_id is None:
        return
    try:
        emergency.record_action(ext, event_id, action, outcome, detail, actor)
    except Exception as exc:  # the database may be what failed; the audit/alerts still say it
        log.warning("flask-notify-emergency: could not record %s on event #%s: %s", action, event_id, exc)


def _step(ext: Any, name: str, actor: str, source: str, event_id: int | None) -> dict[str, Any]:
    try:
        if name.startswith("command:"):
            return run_service_command(ext, name.split(":", 1)[1], actor, source, event_id)
        return STEPS[name](ext, actor, source, event_id)
    except Exception as exc:  # a broken step is a failed step, never a crashed plan
        return {"ok": False, "action": name, "outcome": "failed", "error": f"{type(exc).__name__}: {exc}"}


def run_plan(ext: Any, event: dict[str, Any] | None, failure_type: str, actor: str = "monitor",
             source: str = "monitor", stop: threading.Event | None = None) -> dict[str, Any]:
    """Run the plan of ``failure_type`` with retries; escalate when every attempt failed."""
    cfg = ext.app.config
    event_id = event["id"] if event else None
    plan = PLANS.get(failure_type)
    if failure_type == OVERLOAD:  # nothing is broken: restarting or reconnecting would only add load
        _record(ext, event_id, "recovery-plan", "observe", {"failure_type": failure_type}, actor)
        return {"status": "observing", "ok": True, "attempts": [], "actions": [],
                "note": "overload: nothing is restarted; clients poll less often until it passes"}
    if plan is None:
        _record(ext, event_id, "recovery-plan", "manual", {"failure_type": failure_type}, actor)
        return {"status": "manual", "ok": False, "attempts": [], "actions": [],
                "note": f"no automatic plan for {failure_type}: an operator decides"}
    steps = list(plan.steps)
    if f"recover-{failure_type}" in (cfg["NOTIFY_EMERGENCY_SERVICE_COMMANDS"] or {}):
        steps.append(f"command:recover-{failure_type}")
    attempts_max = int(cfg["NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS"])
    backoff = float(cfg["NOTIFY_EMERGENCY_RECOVERY_BACKOFF"])
    attempts: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    for number in range(1, attempts_max + 1):
        results = [_step(ext, name, actor, source, event_id) for name in steps]
        report = run_health_checks(ext, only=plan.verify)
        failing = [n for n in plan.verify if report.checks[n].status == "failed"]
        verified = not failing
        summary = {"attempt": number, "steps": {r["action"]: r["outcome"] for r in results},
                   "verify": {n: report.checks[n].status for n in plan.verify},
                   "errors": {n: report.checks[n].error for n in failing}}
        _record(ext, event_id, "recovery-attempt", "ok" if verified else "failed", summary, actor)
        attempts.append(summary)
        actions += [dict(r, attempt=number) for r in results]
        if verified:
            return {"status": "recovered", "ok": True, "attempts": attempts, "actions": actions}
        if number < attempts_max:
            delay = backoff * 2 ** (number - 1)
            if stop is not None and stop.wait(delay):
                return {"status": "interrupted", "ok": False, "attempts": attempts, "actions": actions}
            if stop is None:
                time.sleep(delay)
    escalation = escalate(ext, event, failure_type, attempts, actor, source)
    return {"status": "escalated", "ok": False, "attempts": attempts, "actions": actions, "escalation": escalation}


def escalate(ext: Any, event: dict[str, Any] | None, failure_type: str, attempts: list[dict[str, Any]],
             actor: str, source: str) -> dict[str, Any]:
    """Record that the plan failed and alert one level more severe than the event."""
    level = max(1, int(event["level"]) - 1) if event else 1
    detail = {"failure_type": failure_type, "attempts": len(attempts), "alert_level": level,
              "next": "manual intervention; rollback to flash-only delivery if it does not recover"}
    _record(ext, event["id"] if event else None, "escalate", "escalated", detail, actor)
    alerted: list[dict[str, Any]] | None = None
    try:
        if event is not None:
            alerted = alert_event(ext, event, "escalated", level=level,
                                  note=f"automatic recovery failed after {len(attempts)} attempt(s)")
    except Exception as exc:
        log.warning("flask-notify-emergency: escalation alert failed: %s", exc)
    audit_action(ext, actor, "escalate", source, {"failure_type": failure_type},
                 {"outcome": "escalated", **detail, "alerts": len(alerted or [])},
                 event["id"] if event else None)
    return dict(detail, alerts=alerted or [])


def open_for(ext: Any, classification: Classification, actor: str, source: str) -> dict[str, Any]:
    """Open an event for a finding: emergency mode on for levels up to
    ``MONITOR_ACTIVATE_LEVEL``, an event and alerts only for the less severe ones."""
    c = classification
    # overload never pauses real-time delivery: polling everyone would only add load
    if c.failure_type != OVERLOAD and c.level <= ext.app.config["NOTIFY_EMERGENCY_MONITOR_ACTIVATE_LEVEL"]:
        return emergency.activate(ext, reason=c.reason, triggered_by=actor, level=c.level,
                                  failure_type=c.failure_type, source=source, evidence=c.evidence,
                                  affected_users=c.affected_users, actor=actor)
    event = emergency.open_event(ext, level=c.level, failure_type=c.failure_type, reason=c.reason,
                                 triggered_by=actor, evidence=c.evidence, affected_users=c.affected_users)
    why = ("overload: real-time delivery stays on (polling everyone would add load); the poll interval is raised"
           if c.failure_type == OVERLOAD else
           f"level {c.level} is less severe than NOTIFY_EMERGENCY_MONITOR_ACTIVATE_LEVEL")
    _record(ext, event["id"], "open-event", "ok", {"mode": "unchanged", "why": why}, actor)
    audit_action(ext, actor, "open-event", source, {"level": c.level, "failure_type": c.failure_type},
                 {"outcome": "ok"}, event["id"])
    return event


def auto_recover(ext: Any, actor: str = "monitor", source: str = "monitor", *, report: HealthReport | None = None,
                 classification: Classification | None = None, stop: threading.Event | None = None) -> dict[str, Any]:
    """Check, classify, open (or reuse) the emergency event, run the plan, record outcomes.

    Returns ``{"status", "ok", "event", "actions", "classification", "health", ...}``;
    status is healthy, recovered, escalated, manual, interrupted or unrecorded (the database
    is down, so no event could be written; the alerts went out directly).
    """
    report = report or run_health_checks(ext)
    c = classification if classification is not None else classify(report)
    health = {"status": report.status, "score": report.score, "failing": report.failing}
    if c is None:
        result: dict[str, Any] = {"status": "healthy", "ok": True, "event": _event_or_none(ext),
                                  "actions": [], "classification": None, "health": health}
        audit_action(ext, actor, "auto-recover", source, None, dict(result, outcome="ok", event=None))
        return result
    try:
        event = emergency.current_event(ext)
        opened = event is None
        if event is None:
            event = open_for(ext, c, actor, source)
    except sa.exc.SQLAlchemyError as exc:
        return _unrecorded(ext, c, exc, actor, source, stop, health)
    plan = run_plan(ext, event, c.failure_type, actor, source, stop)
    result = {"status": plan["status"], "ok": plan["ok"], "event": _event_or_none(ext, event["id"]) or event,
              "opened": opened, "classification": c.to_dict(), "health": health, "actions": plan["actions"],
              "attempts": plan["attempts"]}
    if "escalation" in plan:
        result["escalation"] = {k: v for k, v in plan["escalation"].items() if k != "alerts"}
    audit_action(ext, actor, "auto-recover", source, None,
                 {"outcome": "ok" if plan["ok"] else "failed", "status": plan["status"],
                  "failure_type": c.failure_type, "level": c.level}, event["id"])
    return result


def _unrecorded(ext: Any, c: Classification, exc: BaseException, actor: str, source: str,
                stop: threading.Event | None, health: dict[str, Any]) -> dict[str, Any]:
    """The database is down: nothing can be written, so alert directly and still repair."""
    error = (f"the emergency could not be recorded: the database is unreachable ({type(exc).__name__}); "
             f"alerts were sent directly. Check SQLALCHEMY_DATABASE_URI and the database server.")
    alerted: list[dict[str, Any]] = []
    try:
        alerted = alert_unrecorded(ext, c, f"{type(exc).__name__}: {exc}")
    except Exception as alert_exc:
        log.warning("flask-notify-emergency: direct alert failed: %s", alert_exc)
    plan = run_plan(ext, None, c.failure_type, actor, source, stop)
    return {"status": "unrecorded", "ok": False, "event": None, "error": error,
            "classification": c.to_dict(), "health": health, "actions": plan["actions"],
            "plan_status": plan["status"], "alerts": alerted}


def _event_or_none(ext: Any, event_id: int | None = None) -> dict[str, Any] | None:
    try:
        return emergency.get_event(ext, event_id) if event_id else emergency.current_event(ext)
    except sa.exc.SQLAlchemyError:
        return None


__all__ = [
    "PLANS", "Plan", "RecoveryError", "auto_recover", "clear_queues", "clear_sessions", "escalate",
    "half_open_breaker", "open_for", "reconnect_database", "reconnect_redis", "replay_backlog",
    "restart_websockets", "run_plan", "run_service_command",
]

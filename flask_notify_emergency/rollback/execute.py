"""Rollback to flash-only delivery, and restore (roll forward) to real time.

Nothing is dropped or deleted: a rollback pauses real-time delivery on every worker,
switches the mode to ``legacy``, hands the undelivered backlog to the flash/poll path and
posts a banner; a restore undoes exactly that. Every step is journaled
(:mod:`.rollback_journal`) and idempotent (:mod:`.rollback_steps`): a run killed half-way
is continued by running the same command again, and ends where an uninterrupted run ends.

The dashboard calls these functions with the web actor; the CLI with the operator::

    rollback(ext, reason="socket queue lost", actor="ann (id 1)", source="web 10.0.0.5", confirm=True)
    restore(ext, actor="ann (id 1)", source="web 10.0.0.5", confirm=True)
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from ..access import is_admin
from ..detect import run_health_checks
from ..models import utcnow
from ..respond import current_event, record_action
from . import approval
from .approval import RollbackError, list_requests, required_approvals
from .backups import BackupError, list_backups
from .journal import BEGIN, DONE, END, FAILED, RESUME, REVERTED, STARTED, Journal, OperationLock, RollbackInProgress
from .steps import RESTORE_STEPS, ROLLBACK_STEPS, Step, current_values
from .validation import database_reachable

__all__ = ["RollbackError", "approve_rollback", "maybe_auto_rollback", "request_rollback", "restore",
           "rollback", "rollback_status", "rollback_success_rate"]

OnStep = Callable[[str, dict[str, Any]], None]


class _StepFailed(Exception):
    def __init__(self, step: str, error: BaseException) -> None:
        self.step, self.error = step, error
        super().__init__(f"{type(error).__name__}: {error}")


def _admin_in_context() -> bool:
    from flask import has_request_context

    if has_request_context():
        return is_admin()
    return True  # the operator at the CLI runs the server itself


def _refuse(ext: Any, actor: str, action: str, source: str, args: dict[str, Any], message: str) -> RollbackError:
    ext.audit.record(actor or "?", action, source, args, outcome="refused", detail=message)
    return RollbackError(message)


def _authorize(ext: Any, admin: bool | None, actor: str, action: str, source: str, args: dict[str, Any]) -> None:
    if not (admin if admin is not None else _admin_in_context()):
        raise _refuse(ext, actor, action, source, args,
                      f"{actor} is not an administrator: only admins may {action.replace('-', ' ')}.")


def request_rollback(ext: Any, *, reason: str, requested_by: str, source: str,
                     admin: bool | None = None) -> dict[str, Any]:
    """Open a planned-rollback request for other admins to approve."""
    args = {"reason": reason, "planned": True}
    _authorize(ext, admin, requested_by, "request-rollback", source, args)
    return approval.request_rollback(ext, reason=reason, requested_by=requested_by, source=source)


def approve_rollback(ext: Any, request_id: str, *, approved_by: str, source: str,
                     admin: bool | None = None) -> dict[str, Any]:
    """Approve someone else's planned-rollback request."""
    _authorize(ext, admin, approved_by, "approve-rollback", source, {"request_id": request_id})
    return approval.approve_rollback(ext, request_id, approved_by=approved_by, source=source)


def _run_steps(ext: Any, journal: Journal, op_id: str, operation: str, steps: tuple[Step, ...],
               done: set[str], actor: str, on_step: OnStep | None) -> None:
    for step in steps:
        if step.name in done:
            continue
        journal.record(op_id, operation, step.name, STARTED, actor)
        try:
            detail = step.run(ext, actor)
        except Exception as exc:
            try:
                journal.record(op_id, operation, step.name, FAILED, actor, {"error": f"{type(exc).__name__}: {exc}"})
            finally:
                raise _StepFailed(step.name, exc) from exc
        journal.record(op_id, operation, step.name, DONE, actor, detail)
        if on_step is not None:
            on_step(step.name, detail)


def _close_interrupted(journal: Journal, op: dict[str, Any], actor: str, by: str) -> None:
    """End an operation whose process died; a restore reverts a rollback's steps."""
    if op["operation"] == "rollback":
        for name in op["done_steps"]:
            journal.record(op["operation_id"], "rollback", name, REVERTED, actor, {"reverted_by": by})
    journal.record(op["operation_id"], op["operation"], END, FAILED, actor,
                   {"interrupted": True, "superseded_by": by})


def _results(journal: Journal, op_id: str) -> dict[str, Any]:
    summary = journal.summary(op_id) or {}
    return {s["step"]: s.get("detail") for s in summary.get("steps", []) if s["status"] == DONE}


def _execute(ext: Any, *, operation: str, steps: tuple[Step, ...], actor: str, source: str,
             begin_detail: dict[str, Any], resume_kind: str, on_step: OnStep | None,
             before_begin: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or continue) one journaled operation under the lock."""
    journal = Journal(ext.engine, ext.models)
    lock = OperationLock(ext.engine, ext.models)
    try:
        lock.acquire(operation, None)
    except RollbackInProgress as exc:
        raise _refuse(ext, actor, operation, source, begin_detail, str(exc)) from None
    try:
        unfinished = journal.unfinished()
        if unfinished is not None and unfinished["operation"] == resume_kind:
            op_id, done = unfinished["operation_id"], set(unfinished["done_steps"])
            journal.record(op_id, operation, RESUME, DONE, actor, dict(begin_detail, skipping=sorted(done)))
        else:
            op_id, done = journal.new_operation_id(operation), set()
            if unfinished is not None:
                _close_interrupted(journal, unfinished, actor, op_id)
            journal.record(op_id, operation, BEGIN, STARTED, actor, begin_detail)
            if before_begin is not None:
                before_begin(op_id)
        try:
            _run_steps(ext, journal, op_id, operation, steps, done, actor, on_step)
        except _StepFailed as exc:
            journal.record(op_id, operation, END, FAILED, actor, {"failed_step": exc.step, "error": str(exc)})
            ext.audit.record(actor, operation, source, dict(begin_detail, operation_id=op_id), outcome="failed",
                             detail=f"step {exc.step}: {exc}")
            undo = "'restore' to undo it" if operation == "rollback" else "'rollback' to go back to flash-only"
            raise RollbackError(
                f"{operation} {op_id} failed at step '{exc.step}': {exc}. The steps done before it stay in "
                f"effect. Fix the cause and run '{operation}' again (every step is safe to repeat), or "
                f"run {undo}.") from exc.error
        results = _results(journal, op_id)
        journal.record(op_id, operation, END, DONE, actor, {"steps": results})
        ext.audit.record(actor, operation, source, dict(begin_detail, operation_id=op_id))
        return {"status": "done", "operation_id": op_id, "operation": operation,
                "resumed": bool(done), "steps": results}
    finally:
        lock.release()


def rollback(ext: Any, *, reason: str, actor: str, source: str, confirm: bool, dry_run: bool = False,
             planned: bool = False, request_id: str | None = None, admin: bool | None = None,
             on_step: OnStep | None = None) -> dict[str, Any]:
    """Roll the cluster back to flash-only delivery (or continue an interrupted rollback).

    ``admin``: whether ``actor`` is an administrator (None: the logged-in user's role in a
    request, True at the CLI). Raises :class:`RollbackError` when refused or failed.
    """
    args: dict[str, Any] = {"reason": reason, "planned": planned, "request_id": request_id}
    _authorize(ext, admin, actor, "rollback", source, args)
    if not isinstance(reason, str) or not reason.strip():
        raise _refuse(ext, actor, "rollback", source, args,
                      'a reason is required: say why, e.g. --reason "socket queue down for 40 minutes".')
    journal = Journal(ext.engine, ext.models)
    unfinished = journal.unfinished()
    resuming = unfinished if unfinished and unfinished["operation"] == "rollback" else None
    if planned and not (resuming and request_id and resuming.get("request_id") == request_id):
        try:
            approval.check_approved(ext, request_id)
        except RollbackError as exc:
            raise _refuse(ext, actor, "rollback", source, args, str(exc)) from None
    if dry_run:
        return {"status": "dry-run", "current": current_values(ext),
                "resuming": resuming["operation_id"] if resuming else None,
                "steps": [{"step": s.name, "description": s.description,
                           "skip": bool(resuming and s.name in resuming["done_steps"])} for s in ROLLBACK_STEPS]}
    if not confirm:
        raise _refuse(ext, actor, "rollback", source, args,
                      "a rollback changes delivery for every user: run again with --confirm "
                      "(or --dry-run to see the steps first).")
    values = current_values(ext)
    last = journal.latest()
    if (resuming is None and unfinished is None and last and last["operation"] == "rollback"
            and last["status"] == "done" and values["mode"] == "legacy" and values["paused"].get("realtime")):
        ext.audit.record(actor, "rollback", source, args, outcome="noop",
                         detail=f"already rolled back by {last['operation_id']}")
        return {"status": "already-done", "operation_id": last["operation_id"], "operation": "rollback",
                "resumed": False, "steps": {}}
    detail = dict(args, reason=reason.strip(), source=source, emergency=not planned)
    return _execute(ext, operation="rollback", steps=ROLLBACK_STEPS, actor=actor, source=source,
                    begin_detail=detail, resume_kind="rollback", on_step=on_step,
                    before_begin=(lambda op_id: approval.mark_used(ext, request_id, op_id, actor)) if planned else None)


def restore_checks(ext: Any) -> list[dict[str, Any]]:
    """What must hold before real time comes back: the database, and real-time health."""
    checks = [database_reachable(ext)]
    try:
        report = run_health_checks(ext).to_dict()
    except Exception as exc:
        checks.append({"name": "realtime-health", "ok": False, "detail": f"health checks failed to run: {exc}"})
        return checks
    relevant = ("realtime", "socket", "canary", "redis", "state", "database", "queue")
    for name, check in sorted(report.get("checks", {}).items()):
        if any(word in name.lower() for word in relevant):
            checks.append({"name": f"health:{name}", "ok": bool(check.get("ok")), "detail": brief(check)})
    return checks


def brief(check: dict[str, Any]) -> str:
    """One line for a health check result: its error, else its scalar details."""
    if check.get("error"):
        return str(check["error"])[:200]
    detail = check.get("detail") or check.get("message")
    if isinstance(detail, dict):
        return ", ".join(f"{k}={v}" for k, v in detail.items() if not isinstance(v, (dict, list)))[:200]
    return str(detail or check.get("status") or "")[:200]


def restore(ext: Any, *, actor: str, source: str, confirm: bool, reason: str | None = None,
            admin: bool | None = None, force: bool = False, on_step: OnStep | None = None) -> dict[str, Any]:
    """Roll forward: check the database and real-time health, then resume real time."""
    args: dict[str, Any] = {"reason": reason, "force": force}
    _authorize(ext, admin, actor, "restore", source, args)
    if not confirm:
        raise _refuse(ext, actor, "restore", source, args,
                      "restore turns real-time delivery back on for every user: run again with --confirm.")
    if force and not (reason and reason.strip()):
        raise _refuse(ext, actor, "restore", source, args, "--force needs --reason: say why it is safe.")
    journal = Journal(ext.engine, ext.models)
    unfinished = journal.unfinished()
    values = current_values(ext)
    if unfinished is None and not (values["mode"] == "legacy" or values["paused"].get("realtime")
                                   or values["rollback_banner"]):
        ext.audit.record(actor, "restore", source, args, outcome="noop", detail="nothing is rolled back")
        return {"status": "nothing-to-restore", "operation_id": None, "operation": "restore",
                "resumed": False, "steps": {}, "mode": values["mode"]}
    checks = restore_checks(ext)
    failing = [c["name"] for c in checks if c["ok"] is False]
    if failing and not force:
        raise _refuse(ext, actor, "restore", source, dict(args, checks=checks),
                      f"refusing to restore real-time delivery: {', '.join(failing)} failing. Fix that "
                      "first, or use --force --reason \"...\" to override.")
    detail = dict(args, source=source, checks=checks)
    result = _execute(ext, operation="restore", steps=RESTORE_STEPS, actor=actor, source=source,
                      begin_detail=detail, resume_kind="restore", on_step=on_step)
    return dict(result, checks=checks)


def rollback_status(ext: Any) -> dict[str, Any]:
    """Live status for the dashboard's rollback page."""
    journal = Journal(ext.engine, ext.models)
    try:
        backups = [b for b in list_backups(ext) if "error" not in b]
    except (BackupError, OSError):
        backups = []
    latest = backups[0] if backups else None
    if latest is not None:
        created = dt.datetime.fromisoformat(str(latest["created_at"]).rstrip("Z"))
        age = (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - created).total_seconds()
        check = latest.get("verification") or {}
        latest = dict(latest, age_seconds=round(age), verified=check.get("ok"),
                      fresh=age <= ext.app.config["NOTIFY_EMERGENCY_ROLLBACK_BACKUP_MAX_AGE"])

    last = journal.latest()
    holder = OperationLock(ext.engine, ext.models).holder()
    checklist = [
        {"name": "backup", "ok": bool(latest and latest["verified"] and latest["fresh"]),
         "detail": (f"{latest['id']}, {latest['age_seconds']}s old, "
                    f"{'verified' if latest['verified'] else 'not verified'}") if latest
         else "no backup: run 'create-backup --emergency'"},
        database_reachable(ext),
        {"name": "no-rollback-in-progress", "ok": holder is None,
         "detail": f"{holder.get('operation')} running in process {holder.get('pid')}" if holder else "none running"},
    ]
    return {
        **current_values(ext),
        "checklist": checklist,
        "latest_backup": latest,
        "in_progress": journal.unfinished(),
        "lock_holder": holder,
        "last_operation": last,
        "requests": list_requests(ext),
        "required_approvals": required_approvals(ext),
        "auto_rollback": bool(ext.app.config["NOTIFY_EMERGENCY_AUTO_ROLLBACK"]),
    }


def rollback_success_rate(ext: Any, since: dt.datetime | None,
                          operations: tuple[str, ...] = ("rollback", "restore")) -> float | None:
    """Share of rollbacks and restores ended since ``since`` that finished ``done``."""
    return Journal(ext.engine, ext.models).success_rate(since, operations)


FAILED_OUTCOMES = ("failed", "failure", "error")
#: what the recovery module records once per run of a plan (its steps are recorded too)
ATTEMPT_ACTION = "recovery-attempt"


def failed_recovery_attempts(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed attempts of the recovery plan: its ``recovery-attempt`` entries when there are
    any (so a plan's failed steps do not count as attempts of their own), else every failed
    action but our own."""
    failed = [a for a in actions if str(a.get("outcome", "")).lower() in FAILED_OUTCOMES
              and a.get("action") != "auto-rollback"]
    if any(a.get("action") == ATTEMPT_ACTION for a in actions):
        return [a for a in failed if a.get("action") == ATTEMPT_ACTION]
    return failed


def maybe_auto_rollback(ext: Any) -> dict[str, Any] | None:
    """Roll back when ``NOTIFY_EMERGENCY_AUTO_ROLLBACK`` is on and the open emergency's recovery
    failed ``RECOVERY_ATTEMPTS`` times, or a level-1 emergency lasted ``AUTO_ROLLBACK_AFTER``
    seconds. The monitor calls this every tick; None means nothing was done."""
    cfg = ext.app.config
    if not cfg["NOTIFY_EMERGENCY_AUTO_ROLLBACK"]:
        return None
    if (ext.control.read("mode", "normal") or "normal") == "legacy":
        return None
    event = current_event(ext)
    if event is None:
        return None
    failures = failed_recovery_attempts(event["actions"])
    why = None
    if len(failures) >= cfg["NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS"]:
        why = f"recovery failed {len(failures)} times"
    elif event["level"] == 1 and event["started_at"]:
        lasted = (utcnow() - dt.datetime.fromisoformat(event["started_at"].rstrip("Z"))).total_seconds()
        if lasted > cfg["NOTIFY_EMERGENCY_AUTO_ROLLBACK_AFTER"]:
            why = f"critical emergency lasting {int(lasted)}s"
    if why is None:
        return None
    journal = Journal(ext.engine, ext.models)
    if journal.unfinished() is not None or OperationLock(ext.engine, ext.models).holder() is not None:
        return None  # someone is already at it
    try:
        result = rollback(ext, reason=f"automatic: {why} (event #{event['id']})", actor="monitor",
                          source="auto-rollback", confirm=True, admin=True)
    except RollbackError as exc:
        record_action(ext, event["id"], "auto-rollback", "failed", str(exc), "monitor")
        return {"status": "failed", "error": str(exc), "event_id": event["id"]}
    record_action(ext, event["id"], "auto-rollback", "ok", {"operation_id": result["operation_id"], "why": why},
                  "monitor")
    return dict(result, event_id=event["id"], why=why)

"""Rollback commands, in the runbook's order.

Pre-rollback checklist: ``document-state``, ``notify-rollback-start``, ``verify-rollback-ready``
(``create-backup --emergency`` is in :mod:`.backups`). Then ``rollback`` (``--dry-run`` shows
the steps), ``verify-rollback``, and later ``restore``. Planned rollbacks: ``request-rollback``,
``approve-rollback``, ``rollback-requests``. ``rollback-status`` shows the checklist live.

The operator at the CLI may always roll back (they run the server); a planned rollback
still needs another admin's approval. An emergency rollback may be started without
``--reason`` (the runbook's ``rollback --confirm``): it records
:data:`DEFAULT_EMERGENCY_REASON`; a planned one must say why.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, TypeVar

import click

from ..rollback import (
    RollbackError,
    approve_rollback,
    document_state,
    list_requests,
    notify_rollback_start,
    request_rollback,
    restore,
    rollback,
    rollback_status,
    verify_rollback,
    verify_rollback_ready,
)
from . import emergency_group
from .output import EXIT_FAILED, SOURCE, actor, done, ext_state, fail, json_option, mark, report, usage

F = TypeVar("F", bound=Callable[..., Any])

#: crash drills: hold the rollback after this step until the file named below exists
HOLD_AFTER_ENV = "NOTIFY_EMERGENCY_ROLLBACK_HOLD_AFTER"
HOLD_FILE_ENV = "NOTIFY_EMERGENCY_ROLLBACK_HOLD_FILE"

#: What an emergency ``rollback`` started without ``--reason`` records in the audit log and
#: the journal (the runbook's line gives none, and an emergency must not wait for one).
DEFAULT_EMERGENCY_REASON = "Emergency rollback from the command line"


def rollback_errors(func: F) -> F:
    """A :class:`RollbackError` (refusal or failure) ends the command with exit 1."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RollbackError as exc:
            fail(str(exc), EXIT_FAILED, as_json=bool(kwargs.get("as_json")))
    return wrapper  # type: ignore[return-value]


def _checks_lines(title: str, result: dict[str, Any]) -> list[str]:
    lines = [f"{title}: {'PASS' if result['ok'] else 'FAIL'}"]
    for c in result["checks"]:
        lines.append(f"  [{mark(c['ok']).strip():>4}] {c['name']}: {c.get('detail') or ''}")
    return lines


def _progress(as_json: bool, header: list[str] | None = None) -> Callable[[str, dict[str, Any]], None]:
    """Print each step as it is done; ``header`` lines go before the first one, so nothing
    says an operation started unless a step really ran."""
    hold_after, hold_file = os.environ.get(HOLD_AFTER_ENV), os.environ.get(HOLD_FILE_ENV)
    pending = list(header or [])

    def on_step(step: str, detail: dict[str, Any]) -> None:
        if not as_json:
            while pending:
                click.echo(pending.pop(0))
            click.echo(f"  done  {step}: {detail}")
        if hold_after == step and hold_file:
            with open(hold_file + ".reached", "w", encoding="ascii") as fh:
                fh.write(str(os.getpid()))
            while not os.path.exists(hold_file):
                time.sleep(0.05)
    return on_step


# -- pre-rollback checklist ---------------------------------------------------------------
@emergency_group.command("document-state")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where to write (default: BACKUP_DIR/reports).")
@json_option
def document_state_command(output_dir: str | None, as_json: bool) -> None:
    """Write a Markdown and a JSON snapshot of the current state; print their paths."""
    result = document_state(ext_state(), actor=actor(), source=SOURCE, out_dir=output_dir)
    report(dict(result, ok=True), as_json, [f"State documented (mode {result['snapshot']['mode']}):",
                                            f"  {result['markdown']}", f"  {result['json']}"])


@emergency_group.command("notify-rollback-start")
@click.option("--reason", help="Why the rollback starts (included in the message).")
@json_option
def notify_rollback_start_command(reason: str | None, as_json: bool) -> None:
    """Tell every admin (in-app, and email/SMS/webhook when alerts exist) a rollback starts."""
    result = notify_rollback_start(ext_state(), actor=actor(), source=SOURCE, reason=reason)
    report(result, as_json, [f"Admins notified: {'yes' if result['ok'] else 'NO CHANNEL WORKED'}"]
           + [f"  [{mark(c['ok']).strip():>4}] {c['channel']}: {c['detail']}" for c in result["channels"]])
    done(result["ok"])


@emergency_group.command("verify-rollback-ready")
@json_option
def verify_rollback_ready_command(as_json: bool) -> None:
    """Check the prerequisites: fresh verified backup, database, no rollback in progress."""
    result = verify_rollback_ready(ext_state(), reverify=True)
    report(result, as_json, _checks_lines("Ready to roll back", result))
    done(result["ok"])


# -- rollback and restore -----------------------------------------------------------------
@emergency_group.command("rollback")
@click.option("--reason", help="Why roll back (required with --planned; an emergency rollback without it "
              f"records \"{DEFAULT_EMERGENCY_REASON}\").")
@click.option("--confirm", is_flag=True, help="Really do it (without it nothing changes).")
@click.option("--dry-run", is_flag=True, help="Print each step and what it would act on; change nothing.")
@click.option("--planned", is_flag=True, help="A planned rollback: needs an approved --request and a --reason.")
@click.option("--request", "request_id", help="The approved request of a planned rollback.")
@json_option
@rollback_errors
def rollback_command(reason: str | None, confirm: bool, dry_run: bool, planned: bool, request_id: str | None,
                     as_json: bool) -> None:
    """Roll back to flash-only delivery (run again to continue an interrupted rollback)."""
    ext = ext_state()
    who = actor()
    defaulted = not (reason and reason.strip())
    if defaulted and planned:
        message = ('a planned rollback needs a reason: say why, e.g. --reason "upgrade of the socket queue". '
                   "Only an emergency rollback (without --planned) may leave it out.")
        ext.audit.record(who, "rollback", SOURCE, {"reason": None, "planned": True, "request_id": request_id},
                         outcome="refused", detail=message)
        usage(message, "--reason")
    if defaulted:
        reason = DEFAULT_EMERGENCY_REASON
    note = f'No --reason given: recording "{reason}".' if defaulted else None
    header = ([note] if note else []) + ["Rolling back to flash-only delivery:"]
    result = rollback(ext, reason=reason or "", actor=who, source=SOURCE, confirm=confirm, dry_run=dry_run,
                      planned=planned, request_id=request_id, admin=True, on_step=_progress(as_json, header))

    def lines() -> list[str]:
        if result["status"] == "dry-run":
            now = result["current"]
            out = ([note] if note else []) + [
                f"Dry run: nothing changed. Now: mode '{now['mode']}', paused {now['paused']}, "
                f"{now['undelivered']} undelivered for {now['undelivered_users']} users."]
            if result["resuming"]:
                out.append(f"An interrupted rollback {result['resuming']} would be continued.")
            out += [f"  {i}. {s['step']}: {s['description']}" + (" (already done)" if s["skip"] else "")
                    for i, s in enumerate(result["steps"], 1)]
            return out
        if result["status"] == "already-done":
            return [f"Already rolled back by {result['operation_id']}; nothing changed. "
                    "Run 'verify-rollback' to check it, 'restore' to roll forward."]
        backlog = result["steps"].get("hand-backlog") or {}
        return [f"Rollback {result['operation_id']} done{' (continued)' if result['resumed'] else ''}: every "
                f"worker delivers by flash and banner; {backlog.get('undelivered', 0)} waiting notifications "
                f"for {backlog.get('users', 0)} users handed to the flash path.",
                f"Reason recorded: {reason}",
                "Next: 'flask emergency verify-rollback'."]

    report(dict(result, ok=True, reason=reason, reason_defaulted=defaulted), as_json, lines)


@emergency_group.command("restore")
@click.option("--confirm", is_flag=True, help="Really do it.")
@click.option("--reason", help="What was fixed (required with --force).")
@click.option("--force", is_flag=True, help="Restore even while the checks fail.")
@json_option
@rollback_errors
def restore_command(confirm: bool, reason: str | None, force: bool, as_json: bool) -> None:
    """Roll forward: check health, resume real-time delivery, mode back to normal."""
    result = restore(ext_state(), actor=actor(), source=SOURCE, confirm=confirm, reason=reason, admin=True,
                     force=force, on_step=_progress(as_json))

    def lines() -> list[str]:
        if result["status"] == "nothing-to-restore":
            return [f"Nothing to restore: mode is '{result['mode']}' and real-time delivery is not paused."]
        mode = (result["steps"].get("switch-mode") or {}).get("mode", "normal")
        return [f"Restore {result['operation_id']} done: real-time delivery resumed, mode '{mode}'."] + [
            f"  [{mark(c['ok']).strip():>4}] {c['name']}: {c.get('detail') or ''}" for c in result["checks"]]

    report(dict(result, ok=True), as_json, lines)


@emergency_group.command("verify-rollback")
@click.option("--user", "user_id", help="Test user id (default: NOTIFY_EMERGENCY_TEST_USER_ID).")
@click.option("--timeout", type=float, default=15.0, show_default=True,
              help="Seconds to wait for every worker to report the legacy mode.")
@json_option
def verify_rollback_command(user_id: str | None, timeout: float, as_json: bool) -> None:
    """Check the rollback: switches, every worker, a flash to the test user, pages, database."""
    result = verify_rollback(ext_state(), actor=actor(), source=SOURCE, user_id=user_id, timeout=timeout)
    report(result, as_json, _checks_lines("Rollback verification", result))
    done(result["ok"])


# -- planned rollbacks --------------------------------------------------------------------
@emergency_group.command("request-rollback")
@click.option("--planned", is_flag=True, required=True, help="Requests are for planned rollbacks.")
@click.option("--reason", help="Why roll back (required).")
@click.option("--requested-by", help="Who requests it (default: the OS user).")
@json_option
@rollback_errors
def request_rollback_command(planned: bool, reason: str | None, requested_by: str | None, as_json: bool) -> None:
    """Open a planned-rollback request that another admin must approve."""
    req = request_rollback(ext_state(), reason=reason or "", requested_by=actor(requested_by), source=SOURCE,
                           admin=True)
    report(dict(req, ok=True), as_json, [
        f"Request {req['id']} opened by {req['requested_by']} ({req['status']}, {req['required']} approvals needed, "
        f"valid until {req['expires_at']}).",
        f"Next: another admin runs 'flask emergency approve-rollback {req['id']} --approved-by NAME'."])


@emergency_group.command("approve-rollback")
@click.argument("request_id")
@click.option("--approved-by", help="Who approves (default: the OS user); not the requester.")
@json_option
@rollback_errors
def approve_rollback_command(request_id: str, approved_by: str | None, as_json: bool) -> None:
    """Approve another admin's planned-rollback request."""
    req = approve_rollback(ext_state(), request_id, approved_by=actor(approved_by), source=SOURCE, admin=True)
    report(dict(req, ok=True), as_json, [
        f"Request {req['id']}: {len(req['approvals'])} of {req['required']} approvals, {req['status']}."]
        + ([f"Next: 'flask emergency rollback --planned --request {req['id']} --reason ... --confirm'."]
           if req["status"] == "approved" else []))


@emergency_group.command("rollback-requests")
@json_option
def rollback_requests_command(as_json: bool) -> None:
    """List open planned-rollback requests."""
    reqs = list_requests(ext_state())
    report({"ok": True, "requests": reqs}, as_json, [
        f"{r['id']}  {r['status']}  by {r['requested_by']}  {len(r['approvals'])}/{r['required']}  {r['reason']}"
        for r in reqs] or ["No open rollback requests."])


@emergency_group.command("rollback-status")
@json_option
def rollback_status_command(as_json: bool) -> None:
    """Mode, latest backup, operation in progress, and the last operation's steps."""
    status = rollback_status(ext_state())

    def lines() -> list[str]:
        backup = status["latest_backup"]
        last = status["last_operation"]
        out = [f"Mode: {status['mode']}; paused: {status['paused']}; "
               f"{status['undelivered']} undelivered for {status['undelivered_users']} users",
               f"Latest backup: {backup['id']} ({backup['age_seconds']}s old, verified: {backup['verified']})"
               if backup else "Latest backup: none"]
        if status["in_progress"]:
            out.append(f"In progress: {status['in_progress']['operation']} {status['in_progress']['operation_id']}")
        if last:
            out.append(f"Last operation: {last['operation']} {last['operation_id']} {last['status']}")
            out += [f"  {s['step']}: {s['status']}" for s in last["steps"]]
        return out

    report(dict(status, ok=True), as_json, lines)

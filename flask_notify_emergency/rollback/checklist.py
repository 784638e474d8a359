"""The runbook's pre-rollback checklist: document the state, tell the admins, check readiness.

* :func:`document_state` writes a Markdown and a JSON snapshot (health, mode, backlog,
  connections, recent events, latest backup, last rollback operation);
* :func:`notify_rollback_start` tells every admin through every channel that works: an
  in-app notification to each id of ``NOTIFY_EMERGENCY_ADMIN_USER_IDS`` and, when the
  alerts module is installed, its email/SMS/webhook alert;
* :func:`verify_rollback_ready` checks a verified, fresh backup, the database, and that no
  rollback is in progress.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..communicate import send_alert
from ..detect import run_health_checks
from ..models import utcnow
from ..respond import current_event, list_events
from .backups import BackupError, list_backups, verification, verify_backup
from .execute import brief
from .journal import Journal, OperationLock
from .report import reports_dir, write_pair
from .steps import current_values
from .validation import admin_user_ids, database_reachable


def _health(ext: Any) -> dict[str, Any]:
    try:
        return dict(run_health_checks(ext).to_dict(), available=True)
    except Exception as exc:
        return {"available": True, "error": f"{type(exc).__name__}: {exc}"[:300]}


def snapshot(ext: Any) -> dict[str, Any]:
    """Everything an operator wants on record before a rollback."""
    values = current_values(ext)
    try:
        breaker = ext.breaker.current
    except Exception as exc:
        breaker = f"unknown ({exc})"
    backups = [b for b in list_backups(ext) if "error" not in b]
    journal = Journal(ext.engine, ext.models)
    return {
        "taken_at": utcnow().isoformat() + "Z", "app": ext.app.name,
        "mode": values["mode"], "paused": values["paused"], "breaker": breaker,
        "backlog": {"undelivered": values["undelivered"], "users": values["undelivered_users"],
                    "oldest": _oldest(ext)},
        "connections": {"connected_users": ext.state.connected_users(), "state_backend": ext.state.backend,
                        "state_healthy": ext.state.healthy},
        "health": _health(ext),
        "open_event": current_event(ext),
        "recent_events": list_events(ext, limit=10),
        "latest_backup": backups[0] if backups else None,
        "last_operation": journal.latest(),
    }


def _oldest(ext: Any) -> str | None:
    _, oldest = ext.store.backlog()
    return oldest.isoformat() + "Z" if oldest else None


def _markdown(snap: dict[str, Any]) -> str:
    lines = [f"# Notification system state, {snap['taken_at']}", "",
             f"- App: `{snap['app']}`", f"- Delivery mode: **{snap['mode']}**",
             f"- Paused services: {', '.join(k for k, v in snap['paused'].items() if v) or 'none'}",
             f"- Circuit breaker: {snap['breaker']}",
             f"- Backlog: {snap['backlog']['undelivered']} undelivered for {snap['backlog']['users']} users"
             f" (oldest {snap['backlog']['oldest'] or '-'})",
             f"- Connected users: {snap['connections']['connected_users']} "
             f"(state backend {snap['connections']['state_backend']}, "
             f"{'healthy' if snap['connections']['state_healthy'] else 'degraded'})", "", "## Health", ""]
    health = snap["health"]
    if not health.get("available"):
        lines.append(f"Health checks: {health.get('detail')}")
    elif health.get("error"):
        lines.append(f"Health checks could not run: {health['error']}")
    else:
        for name, check in sorted((health.get("checks") or {}).items()):
            detail = brief(check)
            lines.append(f"- {'ok' if check.get('ok') else 'FAIL'} {name}: {detail}")
    lines += ["", "## Emergency events", ""]
    for e in snap["recent_events"] or []:
        lines.append(f"- #{e['id']} level {e['level']} ({e['level_name']}) {e['status']}: "
                     f"{e['failure_type']} - {e['reason'] or ''} (detected {e['detected_at']})")
    if not snap["recent_events"]:
        lines.append("None recorded.")
    backup = snap["latest_backup"]
    lines += ["", "## Latest backup", "",
              f"{backup['id']} ({backup['created_at']})" if backup else "None: run `create-backup --emergency`."]
    op = snap["last_operation"]
    lines += ["", "## Last rollback/restore", "",
              f"{op['operation']} {op['operation_id']}: {op['status']} ({op['started_at']})" if op else "None."]
    return "\n".join(lines) + "\n"


def document_state(ext: Any, *, actor: str, source: str, out_dir: str | None = None) -> dict[str, Any]:
    """Write ``state-<time>.md`` and ``.json``; return their paths and the snapshot."""
    snap = snapshot(ext)
    stem = f"state-{utcnow().strftime('%Y%m%dT%H%M%S')}"
    paths = write_pair(reports_dir(ext, out_dir), stem, _markdown(snap), snap)
    ext.audit.record(actor, "document-state", source, {"paths": paths})
    return dict(paths, snapshot=snap)


def notify_rollback_start(ext: Any, *, actor: str, source: str, reason: str | None = None) -> dict[str, Any]:
    """Tell every admin a rollback is starting, by every channel available."""
    subject = "Notification rollback starting"
    body = (f"{actor} is rolling notifications back to flash-only delivery"
            + (f": {reason}" if reason else ".") + " Check the emergency dashboard for progress.")
    channels: list[dict[str, Any]] = []
    ids = admin_user_ids(ext)
    sent, errors = [], []
    for uid in ids:
        try:
            with ext.app.app_context():
                sent.append(ext.dispatcher.send(uid, subject, body, priority="critical", category="emergency"))
        except Exception as exc:
            errors.append(f"{uid}: {exc}")
    channels.append({"channel": "in-app", "ok": bool(sent) and not errors,
                     "detail": f"{len(sent)} of {len(ids)} admins" + (f"; {'; '.join(errors)}" if errors else "")
                     if ids else "no admins: set NOTIFY_EMERGENCY_ADMIN_USER_IDS"})
    channels += _external_alerts(ext, subject, body)
    ok = any(c["ok"] for c in channels)
    ext.audit.record(actor, "notify-rollback-start", source, {"reason": reason, "channels": channels},
                     outcome="ok" if ok else "failed")
    return {"ok": ok, "channels": channels}


#: external alert channels and the setting that gives each its targets
EXTERNAL = {"email": "NOTIFY_EMERGENCY_ALERT_EMAILS", "sms": "NOTIFY_EMERGENCY_ALERT_SMS_NUMBERS",
            "webhook": "NOTIFY_EMERGENCY_ALERT_WEBHOOKS"}


def _external_alerts(ext: Any, subject: str, body: str) -> list[dict[str, Any]]:
    """Email, SMS and webhooks through the alerts module, for each channel with targets
    (in-app is sent above, so the alerts module's own in-app channel is not asked)."""
    names = [name for name, key in EXTERNAL.items() if ext.app.config.get(key)]
    if not names:
        return [{"channel": "alerts", "ok": None,
                 "detail": f"no targets configured ({', '.join(EXTERNAL.values())})"}]

    try:
        event = current_event(ext)
        rows = send_alert(ext, subject, body, "critical", event_id=event["id"] if event else None, channels=names)
    except Exception as exc:
        return [{"channel": "alerts", "ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}]
    return [{"channel": str(r.get("channel")), "ok": bool(r.get("ok")),
             "detail": f"{r.get('target')}" + (f": {r.get('error')}" if r.get("error") else "")} for r in rows]


def verify_rollback_ready(ext: Any, reverify: bool = False) -> dict[str, Any]:
    """The prerequisites of a rollback, each pass/fail; ``ok`` only when all pass.

    The newest backup's last verification is reused while the archive is unchanged;
    ``reverify`` reads it again in full (the CLI does).
    """
    checks: list[dict[str, Any]] = []
    max_age = ext.app.config["NOTIFY_EMERGENCY_ROLLBACK_BACKUP_MAX_AGE"]
    try:
        invalid = [b for b in list_backups(ext) if "error" in b]
        if invalid:  # a rollback must not meet an archive it cannot read
            raise BackupError("invalid archive(s) in the backup directory, move them away: "
                              + "; ".join(str(b["error"]) for b in invalid))
        result = verify_backup(ext, None) if reverify else verification(ext, None)
        if not result["ok"]:
            raise BackupError(f"{result['id']} does not verify: {'; '.join(result['problems'])}")
        created = dt.datetime.fromisoformat(str(result["created_at"]).rstrip("Z"))
        age = (utcnow() - created).total_seconds()
        fresh = age <= max_age
        checks.append({"name": "backup", "ok": fresh,
                       "detail": f"{result['id']}, {int(age)}s old, verified"
                       + ("" if fresh else f"; older than NOTIFY_EMERGENCY_ROLLBACK_BACKUP_MAX_AGE={max_age}s: "
                          "run 'create-backup --emergency'")})
    except (BackupError, ValueError, TypeError) as exc:
        checks.append({"name": "backup", "ok": False, "detail": str(exc)})
    checks.append(database_reachable(ext))
    holder = OperationLock(ext.engine, ext.models).holder()
    unfinished = Journal(ext.engine, ext.models).unfinished()
    if holder:
        detail = (f"{holder.get('operation')} {holder.get('operation_id') or ''} running in process "
                  f"{holder.get('pid')} on {holder.get('host')}")
    elif unfinished:
        detail = (f"{unfinished['operation']} {unfinished['operation_id']} was interrupted; running "
                  f"'{unfinished['operation']}' again continues it")
    else:
        detail = "no rollback or restore running"
    checks.append({"name": "no-rollback-in-progress", "ok": holder is None, "detail": detail})
    mode = ext.control.read("mode", "normal") or "normal"
    checks.append({"name": "mode", "ok": True, "detail": f"current mode '{mode}'"
                   + (" (already rolled back)" if mode == "legacy" else "")})
    return {"ok": all(c["ok"] for c in checks), "checks": checks}

"""The emergency status report for the team: mode, open event, health, backlog, what was done.

``generate-status-report`` prints it as JSON, Markdown or an email (subject and body), and
with ``--recipients`` mails it through the alerts' email channel. The Markdown and email
bodies come from ``notify_emergency/reports/status_report.md``, which a host can override.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..communicate import dashboard_status, list_incidents, public_status, public_view, send_email
from ..models import utcnow
from ..respond import current_event
from .metrics import health_metrics

FORMATS = ("email", "markdown", "json")
RECENT_ACTIONS = 15


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def recent_actions(ext: Any, limit: int = RECENT_ACTIONS) -> list[dict[str, Any]]:
    """The newest audit entries: who did what, when, with which outcome."""
    t = ext.models.AuditEntry.__table__
    q = sa.select(t.c.id, t.c.at, t.c.actor, t.c.action, t.c.source, t.c.outcome, t.c.detail,
                  t.c.event_id).order_by(t.c.id.desc()).limit(limit)
    with ext.engine.connect() as conn:
        rows = conn.execute(q).all()
    return [{"id": r.id, "at": _iso(r.at), "actor": r.actor, "action": r.action, "source": r.source,
             "outcome": r.outcome, "detail": r.detail, "event_id": r.event_id} for r in rows]


def _health(ext: Any, include: bool) -> dict[str, Any]:
    if not include:
        return {"available": False, "score": None, "status": None, "failing": [],
                "detail": "not checked (--no-health)"}
    return dict(health_metrics(ext))


def gather(ext: Any, *, include_health: bool = True) -> dict[str, Any]:
    """Everything the report says, as JSON-ready data."""
    count, oldest = ext.store.backlog()
    now = utcnow()
    return {
        "generated_at": _iso(now),
        "mode": ext.control.read("mode", "normal") or "normal",
        "paused": {k: bool(v) for k, v in (ext.control.read("paused", {}) or {}).items()},
        "breaker": ext.breaker.current,
        "dashboard_status": dashboard_status(ext),
        "status_page": public_view(public_status(ext)),
        "event": current_event(ext),
        "incidents": list_incidents(ext, status="open", limit=10),
        "health": _health(ext, include_health),
        "backlog": {"undelivered": count, "oldest_at": _iso(oldest),
                    "oldest_age_seconds": round((now - oldest).total_seconds(), 1) if oldest else None},
        "recent_actions": recent_actions(ext),
    }


def subject(report: dict[str, Any]) -> str:
    """One line saying how things stand, for the email subject."""
    event = report.get("event")
    team = (report.get("dashboard_status") or {}).get("status") or "no team status"
    head = f"[{report['mode'].upper()}] Notification system status: {team}"
    if event:
        head += f" - emergency #{event['id']} level {event['level']} ({event['level_name']})"
    return head


def render_markdown(ext: Any, report: dict[str, Any]) -> str:
    """The report as Markdown (the template ``notify_emergency/reports/status_report.md``).

    Rendered by the app's Jinja environment without the host's context processors, which
    may need a request the CLI does not have.
    """
    template = ext.app.jinja_env.get_template("notify_emergency/reports/status_report.md")
    return template.render(report=report, subject=subject(report))


def render(ext: Any, report: dict[str, Any], fmt: str) -> dict[str, Any]:
    """``{"subject", "body"}`` for email, ``{"body"}`` for Markdown; ValueError on other formats."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}.")
    if fmt == "json":
        return {"body": None}
    body = render_markdown(ext, report)
    return {"subject": subject(report), "body": body} if fmt == "email" else {"body": body}


def mail(ext: Any, recipients: list[str], report: dict[str, Any], actor: str,
         source: str = "cli") -> list[dict[str, Any]]:
    """Mail the report to ``recipients`` through the alerts' email channel; one result each."""
    rendered = render(ext, report, "email")
    results = [dict(r) for r in send_email(ext, recipients, rendered["subject"], rendered["body"])]
    ok = bool(results) and all(r.get("ok") for r in results)
    event = report.get("event")
    ext.audit.record(actor, "generate-status-report", source, {"format": "email", "recipients": recipients},
                     outcome="ok" if ok else "failed",
                     detail="; ".join(f"{r.get('target')}: {'sent' if r.get('ok') else r.get('error')}"
                                      for r in results)[:2000],
                     event_id=event["id"] if event else None)
    return results

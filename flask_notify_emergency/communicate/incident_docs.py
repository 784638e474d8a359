"""Incident documentation: the runbook's "Required Documentation" as a Markdown report.

``document-incident`` fills it from the stored event, its timeline of actions, its audit
entries, its incidents and the notifications of its window; ``generate-report-template``
renders the same template blank. Sections: event log, recovery actions, timeline, impact
assessment, root cause analysis, lessons learned, improvement recommendations. Templates
are ``notify_emergency/reports/incident_<standard|brief>.md``, overridable by name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import sqlalchemy as sa

from ..models import utcnow
from ..respond import get_event
from .incidents import list_incidents, reference

TEMPLATES = ("standard", "brief")
#: The runbook's targets, in seconds.
TARGET_DETECTION = 5 * 60
TARGET_RESPONSE = 15 * 60
TARGET_IMPACT = 30 * 60


def reports_dir(ext: Any) -> str:
    """``NOTIFY_EMERGENCY_BACKUP_DIR/../reports``: where reports go unless told otherwise."""
    backup_dir = os.path.abspath(ext.app.config["NOTIFY_EMERGENCY_BACKUP_DIR"])
    return os.path.join(os.path.dirname(backup_dir), "reports")


def duration_text(seconds: float | None) -> str:
    """``4 min 12 s``, ``2 h 5 min``; '-' for None."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _parse(stamp: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(stamp.rstrip("Z")) if stamp else None


def _between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _one_line(value: Any) -> str:
    """Free text kept on one Markdown line."""
    return " ".join(str(value).split()) if value is not None else ""


def _audit_entries(ext: Any, event_id: int) -> list[dict[str, Any]]:
    t = ext.models.AuditEntry.__table__
    with ext.engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.event_id == event_id).order_by(t.c.at, t.c.id)).all()
    return [{"at": r.at.isoformat() + "Z", "actor": r.actor, "action": r.action, "source": r.source,
             "outcome": r.outcome, "detail": _one_line(r.detail), "arguments": r.arguments} for r in rows]


def _notifications(ext: Any, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Notifications created during the event, by how they were delivered (one GROUP BY)."""
    t = ext.models.Notification.__table__
    q = (sa.select(t.c.channel, t.c.delivered, sa.func.count())
         .where(t.c.created_at >= start, t.c.created_at <= end).group_by(t.c.channel, t.c.delivered))
    by_channel: dict[str, int] = {}
    total = undelivered = 0
    with ext.engine.connect() as conn:
        for channel, delivered, count in conn.execute(q):
            total += int(count)
            if not delivered:
                undelivered += int(count)
            else:
                by_channel[str(channel)] = by_channel.get(str(channel), 0) + int(count)
    return {"created": total, "undelivered": undelivered, "delivered_by_channel": by_channel}


def _timeline(event: dict[str, Any], audit: list[dict[str, Any]]) -> list[dict[str, str]]:
    items = [{"at": event["started_at"], "what": "failure started", "who": ""},
             {"at": event["detected_at"], "what": f"detected ({event['failure_type']})",
              "who": event.get("triggered_by") or ""}]
    if event.get("acknowledged_at"):
        items.append({"at": event["acknowledged_at"], "what": "acknowledged", "who": event["acknowledged_by"]})
    audited = {(a["action"], a["actor"], a["at"][:19]) for a in audit}
    for action in event.get("actions") or []:
        if (action.get("action"), action.get("actor"), str(action.get("at"))[:19]) in audited:
            continue  # the audit entry below says the same, with more detail
        items.append({"at": action.get("at"), "what": f"{action.get('action')} [{action.get('outcome')}]",
                      "who": action.get("actor") or ""})
    for a in audit:
        items.append({"at": a["at"], "what": f"{a['action']} [{a['outcome']}]"
                      + (f": {a['detail']}" if a["detail"] else ""), "who": f"{a['actor']} ({a['source']})"})
    if event.get("resolved_at"):
        items.append({"at": event["resolved_at"], "what": "resolved" + (
            "" if event.get("recovered") else " (not recovered)"), "who": event.get("resolved_by") or ""})
    return sorted((i for i in items if i["at"]), key=lambda i: str(i["at"]))


def recommendations(event: dict[str, Any], impact: dict[str, Any]) -> list[str]:
    """What the stored facts say should improve, measured against the runbook's targets."""
    out = []
    if (impact["detection_seconds"] or 0) > TARGET_DETECTION:
        out.append(f"Detection took {duration_text(impact['detection_seconds'])} (target under 5 min): "
                   "check the monitor's interval and the alert triggers for this failure type.")
    if (impact["response_seconds"] or 0) > TARGET_RESPONSE:
        out.append(f"Resolution took {duration_text(impact['response_seconds'])} after detection (target "
                   "under 15 min): review the recovery plan for this failure type.")
    if (impact["duration_seconds"] or 0) > TARGET_IMPACT:
        out.append(f"Users were affected for {duration_text(impact['duration_seconds'])} (target under "
                   "30 min): consider an earlier rollback.")
    if impact["acknowledge_seconds"] is None and event["status"] == "open":
        out.append("Nobody has acknowledged the event yet: acknowledge it so escalation stops.")
    elif impact["acknowledge_seconds"] is not None and event.get("respond_within_minutes") and \
            impact["acknowledge_seconds"] > event["respond_within_minutes"] * 60:
        out.append(f"Acknowledged after {duration_text(impact['acknowledge_seconds'])}, beyond the level's "
                   f"{event['respond_within_minutes']} min response time: check who is paged and how.")
    if event["status"] == "resolved" and not event.get("recovered"):
        out.append("The event was closed without a recovery: find out what was left broken.")
    if impact["notifications"]["undelivered"]:
        out.append(f"{impact['notifications']['undelivered']} notification(s) from the event's window are "
                   "still undelivered: check the backlog and replay.")
    return out


def incident_context(ext: Any, event_id: int) -> dict[str, Any]:
    """Everything the report says about event ``event_id``; ValueError if there is none."""
    event = get_event(ext, event_id)
    if event is None:
        raise ValueError(f"no emergency event #{event_id}: list events on the dashboard or with "
                         "'flask emergency status'.")
    audit = _audit_entries(ext, event_id)
    started, detected = _parse(event["started_at"]), _parse(event["detected_at"])
    resolved, acknowledged = _parse(event["resolved_at"]), _parse(event["acknowledged_at"])
    end = resolved or utcnow()
    impact = {
        "duration_seconds": _between(started or detected, end),
        "detection_seconds": _between(started, detected),
        "response_seconds": _between(detected, resolved),
        "acknowledge_seconds": _between(detected, acknowledged),
        "ongoing": resolved is None,
        "affected_users": event["affected_users"],
        "notifications": _notifications(ext, started or detected or end, end),
    }
    evidence = event.get("evidence") or {}
    return {
        "event": dict(event, reason=_one_line(event["reason"])),
        "reference": reference("emergency", event["id"], detected),
        "drill": bool(isinstance(evidence, dict) and evidence.get("drill")),
        "evidence_json": json.dumps(evidence, indent=2, sort_keys=True, default=str) if evidence else "",
        "actions": [dict(a, detail=_one_line(json.dumps(a.get("detail"), default=str))
                         if a.get("detail") is not None else "") for a in event["actions"]],
        "audit": audit,
        "timeline": _timeline(event, audit),
        "incidents": list_incidents(ext, event_id=event_id),
        "impact": impact,
        "durations": {k: duration_text(v) for k, v in impact.items() if k.endswith("_seconds")},
        "recommendations": recommendations(event, impact),
        "generated_at": utcnow().isoformat() + "Z",
    }


def render_incident(ext: Any, event_id: int, template: str = "standard") -> str:
    """The filled-in report for one event, as Markdown."""
    _check_template(template)
    return _render(ext, template, blank=False, **incident_context(ext, event_id))


def render_blank(ext: Any, template: str = "standard") -> str:
    """The report template with every section to be filled in by hand."""
    _check_template(template)
    return _render(ext, template, blank=True, event=None, generated_at=utcnow().isoformat() + "Z")


def _render(ext: Any, template: str, **context: Any) -> str:
    # the app's Jinja environment (so a host overrides the template by name), without the
    # host's context processors, which may need a request the CLI does not have
    return str(ext.app.jinja_env.get_template(f"notify_emergency/reports/incident_{template}.md")
               .render(**context))


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"--template must be one of {', '.join(TEMPLATES)}; got {template!r}.")


def write_report(ext: Any, text: str, name: str, output: str | None = None, force: bool = False) -> str:
    """Write ``text`` to ``output`` (refusing to overwrite unless ``force``) or into
    :func:`reports_dir` as ``<name>-<UTC time>.md``; return the path."""
    if output:
        path = os.path.abspath(output)
        if os.path.isdir(path):
            raise ValueError(f"--output {output!r} is a directory: give a file name.")
        if os.path.exists(path) and not force:
            raise ValueError(f"--output {output!r} exists: choose another name or add --force to overwrite.")
    else:
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(reports_dir(ext), f"{name}-{stamp}.md")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path

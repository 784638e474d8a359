"""Incident records: the runbook's "emergency incident ticket".

An incident is its own row (``notify_emergency_incident``), not an emergency event: opening
one never changes the delivery mode, and the events table (whose rows drive MTTD/MTTR and
``deactivate-emergency``) keeps only what the system detected or an admin declared. An
incident created while an emergency event is open is linked to it, and the event's
timeline records it.

Records are referred to by number (``12``) or the runbook's style (``emergency_20250830_012``,
``drill_20250830_003``): a prefix, the day it started, and the number.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa

from ..models import MAX_ROW_ID, utcnow
from ..respond import current_event, get_event, record_action

PRIORITIES = ("critical", "high", "medium", "low")
STATUSES = ("open", "closed")
TITLE_MAX_LENGTH = 200
ASSIGNEE_MAX_LENGTH = 128

_REFERENCE = re.compile(r"^(?P<prefix>[a-z]+)_(?P<day>[0-9]{8})_(?P<number>[0-9]+)$")


def reference(prefix: str, number: int, day: dt.datetime | None) -> str:
    """``emergency_20250830_012``: how the runbook writes a record's id."""
    stamp = (day or utcnow()).strftime("%Y%m%d")
    return f"{prefix}_{stamp}_{number:03d}"


def parse_reference(value: Any, prefix: str) -> tuple[int, str | None]:
    """``'12'`` -> (12, None); ``'<prefix>_20250830_012'`` -> (12, '20250830'). ValueError otherwise.

    The day, when given, is checked by the caller against the record's start.
    """
    text = str(value).strip()
    number, day = None, None
    if text.isascii() and text.isdigit():
        number = text
    else:
        match = _REFERENCE.match(text)
        if match and match.group("prefix") == prefix:
            number, day = match.group("number"), match.group("day")
    if number is not None and len(number) <= 19 and 0 < int(number) <= MAX_ROW_ID:
        return int(number), day
    raise ValueError(f"{text[:40]!r} is not a valid {prefix} id: use its number (1 to {MAX_ROW_ID}, "
                     f"e.g. 12) or '{prefix}_YYYYMMDD_NNN' as printed by the command that made it.")


def check_day(day: str | None, started: dt.datetime | None, what: str) -> None:
    """ValueError if a reference's day does not match the record it names."""
    if day is not None and started is not None and started.strftime("%Y%m%d") != day:
        raise ValueError(f"{what} started on {started:%Y-%m-%d}, not {day[:4]}-{day[4:6]}-{day[6:]}: "
                         "check the id.")


def _table(ext: Any) -> sa.Table:
    return ext.models.Incident.__table__


def incident_dict(row: Any) -> dict[str, Any]:
    """An incident as JSON-ready data."""
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() + "Z" if v else None

    return {"id": row.id, "reference": reference("incident", row.id, row.created_at),
            "title": row.title, "priority": row.priority, "assignee": row.assignee,
            "status": row.status, "event_id": row.event_id, "created_at": iso(row.created_at),
            "created_by": row.created_by, "closed_at": iso(row.closed_at)}


def get_incident(ext: Any, incident_id: int) -> dict[str, Any] | None:
    t = _table(ext)
    with ext.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == incident_id)).first()
    return incident_dict(row) if row else None


def list_incidents(ext: Any, *, event_id: int | None = None, status: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, optionally only those of one event or one status."""
    t = _table(ext)
    q = sa.select(t).order_by(t.c.id.desc()).limit(limit)
    if event_id is not None:
        q = q.where(t.c.event_id == event_id)
    if status is not None:
        q = q.where(t.c.status == status)
    with ext.engine.connect() as conn:
        return [incident_dict(r) for r in conn.execute(q)]


def validate(title: Any, priority: Any, assignee: Any) -> tuple[str, str, str | None]:
    """Clean inputs, or ValueError saying which to fix."""
    if not isinstance(title, str) or not title.strip():
        raise ValueError("--title is required: say what the incident is about.")
    if len(title.strip()) > TITLE_MAX_LENGTH:
        raise ValueError(f"--title is {len(title.strip())} characters; the limit is {TITLE_MAX_LENGTH}.")
    if priority not in PRIORITIES:
        raise ValueError(f"--priority must be one of {', '.join(PRIORITIES)}; got {priority!r}.")
    if assignee is not None:
        if not isinstance(assignee, str) or not assignee.strip():
            raise ValueError("--assignee must not be empty (leave it out to assign nobody).")
        if len(assignee.strip()) > ASSIGNEE_MAX_LENGTH:
            raise ValueError(f"--assignee is longer than {ASSIGNEE_MAX_LENGTH} characters.")
        assignee = assignee.strip()
    return title.strip(), str(priority), assignee


def create_incident(ext: Any, *, title: str, priority: str, assignee: str | None, actor: str,
                    source: str = "cli", event_id: int | None = None) -> dict[str, Any]:
    """Record an incident, linked to ``event_id`` or else to the open emergency event, if any."""
    title, priority, assignee = validate(title, priority, assignee)
    if event_id is not None and get_event(ext, event_id) is None:
        raise ValueError(f"no emergency event #{event_id}: check --event-id.")
    if event_id is None:
        event = current_event(ext)
        event_id = int(event["id"]) if event else None
    t = _table(ext)
    with ext.engine.begin() as conn:
        result = conn.execute(t.insert().values(
            title=title, priority=priority, assignee=assignee, status="open", event_id=event_id,
            created_at=utcnow(), created_by=actor))
    incident = get_incident(ext, int(result.inserted_primary_key[0]))
    assert incident is not None
    if event_id is not None:
        record_action(ext, event_id, "create-incident", "ok",
                      {"incident_id": incident["id"], "title": title, "priority": priority,
                       "assignee": assignee}, actor)
    ext.audit.record(actor, "create-incident", source,
                     {"title": title, "priority": priority, "assignee": assignee},
                     detail=f"incident #{incident['id']}", event_id=event_id)
    return incident


def close_incident(ext: Any, incident_id: int, actor: str, source: str = "cli") -> dict[str, Any]:
    """Close an open incident; ValueError if there is no such incident."""
    t = _table(ext)
    with ext.engine.begin() as conn:
        conn.execute(t.update().where(t.c.id == incident_id, t.c.status == "open")
                     .values(status="closed", closed_at=utcnow()))
    incident = get_incident(ext, incident_id)
    if incident is None:
        raise ValueError(f"no incident #{incident_id}: check the id.")
    ext.audit.record(actor, "close-incident", source, {"incident_id": incident_id},
                     event_id=incident["event_id"])
    return incident

"""What the dashboard lists: events, an event's audit trail, the notification backlog,
banners, recent audit entries. Shared by the HTML pages and the JSON API.

Lists are paged with ``LIMIT n + 1`` (is there a next page?) instead of a ``COUNT`` over
tables that may hold millions of rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..config import redacted
from ..delivery import banner_payload
from ..models import utcnow
from ..respond import list_events

NOTIFICATION_STATES = ("all", "delivered", "undelivered")
NOTIFICATION_CHANNELS = ("realtime", "flash", "poll")
EVENT_STATUSES = ("open", "resolved")
#: The highest page number a list accepts (its offset must fit any database's integers).
MAX_PAGE = 1_000_000
MAX_PER_PAGE = 100


class QueryError(ValueError):
    """A filter or page parameter is unusable; the message says which and how to fix it."""


@dataclass(frozen=True)
class Page:
    """One page of a list."""

    items: list[dict[str, Any]]
    page: int
    per_page: int
    has_next: bool

    def to_dict(self, **filters: Any) -> dict[str, Any]:
        return {"items": self.items, "page": self.page, "per_page": self.per_page,
                "has_next": self.has_next, "has_prev": self.page > 1, "filters": filters}


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def int_arg(args: Any, name: str, default: int, low: int = 1, high: int | None = None) -> int:
    """A whole-number query parameter within bounds; QueryError otherwise."""
    raw = args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise QueryError(f"{name} must be a whole number; got {str(raw)[:40]!r}.") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise QueryError(f"{name} must be {bound}; got {value}.")
    return value


def page_args(args: Any, default_per_page: int = 50) -> tuple[int, int]:
    return int_arg(args, "page", 1, 1, MAX_PAGE), int_arg(args, "per_page", default_per_page, 1, MAX_PER_PAGE)


# -- events ------------------------------------------------------------------------------
def events_page(ext: Any, args: Any) -> Page:
    """Events, newest first, optionally only ``open`` or ``resolved`` ones."""
    status = args.get("status") or None
    if status is not None and status not in EVENT_STATUSES:
        raise QueryError(f"status must be one of {', '.join(EVENT_STATUSES)} (or empty for all); got {status!r}.")
    page, per_page = page_args(args)
    rows = list_events(ext, limit=per_page + 1, offset=(page - 1) * per_page, status=status)
    return Page(rows[:per_page], page, per_page, len(rows) > per_page)


def audit_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "at": iso(row.at), "actor": row.actor, "action": row.action,
            "source": row.source, "arguments": row.arguments, "outcome": row.outcome,
            "detail": row.detail, "event_id": row.event_id}


def event_audit(ext: Any, event_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The audit entries that name this event, oldest first."""
    t = ext.models.AuditEntry.__table__
    q = sa.select(t).where(t.c.event_id == event_id).order_by(t.c.id).limit(limit)
    with ext.engine.connect() as conn:
        return [audit_dict(r) for r in conn.execute(q)]


def recent_audit(ext: Any, limit: int = 10) -> list[dict[str, Any]]:
    """The newest audit entries, newest first."""
    t = ext.models.AuditEntry.__table__
    with ext.engine.connect() as conn:
        return [audit_dict(r) for r in conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit))]


# -- notifications -----------------------------------------------------------------------
def notification_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "user_id": row.user_id, "title": row.title, "message": row.message,
            "priority": row.priority, "category": row.category, "created_at": iso(row.created_at),
            "delivered": bool(row.delivered), "delivered_at": iso(row.delivered_at),
            "channel": row.channel, "attempts": row.attempts, "expires_at": iso(row.expires_at),
            # undelivered, offered by a flash or a poll and awaiting the browser's confirmation
            "offered_via": row.offered_via, "offered_at": iso(row.offered_at)}


def notification_filters(args: Any) -> dict[str, Any]:
    """Validated filters: ``user`` (an id), ``state`` and ``channel``."""
    user = (args.get("user") or "").strip() or None
    if user is not None and len(user) > 64:
        raise QueryError("user must be a user id of at most 64 characters.")
    state = args.get("state") or "all"
    if state not in NOTIFICATION_STATES:
        raise QueryError(f"state must be one of {', '.join(NOTIFICATION_STATES)}; got {state!r}.")
    channel = args.get("channel") or None
    if channel is not None and channel not in NOTIFICATION_CHANNELS:
        raise QueryError(f"channel must be one of {', '.join(NOTIFICATION_CHANNELS)} (or empty for any); "
                         f"got {channel!r}.")
    if channel is not None and state == "undelivered":
        raise QueryError("an undelivered notification has no channel: choose state 'delivered' or 'all' "
                         "with a channel, or no channel.")
    return {"user": user, "state": state, "channel": channel}


def notifications_page(ext: Any, args: Any) -> tuple[Page, dict[str, Any]]:
    """The backlog (or any notifications), newest first, filtered and paged."""
    filters = notification_filters(args)
    page, per_page = page_args(args)
    t = ext.models.Notification.__table__
    q = sa.select(t).order_by(t.c.id.desc()).limit(per_page + 1).offset((page - 1) * per_page)
    if filters["user"] is not None:
        q = q.where(t.c.user_id == filters["user"])
    if filters["state"] != "all":
        q = q.where(t.c.delivered == (sa.true() if filters["state"] == "delivered" else sa.false()))
    if filters["channel"] is not None:
        q = q.where(t.c.channel == filters["channel"])
    with ext.engine.connect() as conn:
        rows = [notification_dict(r) for r in conn.execute(q)]
    return Page(rows[:per_page], page, per_page, len(rows) > per_page), filters


# -- banners -----------------------------------------------------------------------------
def banner_admin_dict(row: Any) -> dict[str, Any]:
    now = utcnow()
    data = dict(banner_payload(row), created_by=row.created_by)  # admins only
    if row.dismissed_at is not None:
        status = "dismissed"
    elif row.ends_at is not None and row.ends_at <= now:
        status = "ended"
    elif row.starts_at is not None and row.starts_at > now:
        status = "scheduled"
    else:
        status = "active"
    data.update(status=status, dismissed_at=iso(row.dismissed_at), dismissed_by=row.dismissed_by)
    return data


def banners_admin(ext: Any, limit: int = 100) -> list[dict[str, Any]]:
    """Every banner (active, scheduled, ended, dismissed), newest first."""
    b = ext.models.Banner.__table__
    with ext.engine.connect() as conn:
        return [banner_admin_dict(r) for r in conn.execute(sa.select(b).order_by(b.c.id.desc()).limit(limit))]


# -- settings ----------------------------------------------------------------------------
def settings_view(config: Any) -> dict[str, Any]:
    """The extension's settings, redacted, as JSON-safe values."""
    import json

    return json.loads(json.dumps(redacted(dict(config)), default=str))

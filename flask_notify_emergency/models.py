"""SQLAlchemy models, declared on the host's Flask-SQLAlchemy ``db``.

Models are built once per ``db`` object by :func:`models_for` so the extension never owns a
metadata of its own: ``db.create_all()`` and the host's migrations see our tables too.
Every table name starts ``notify_emergency_``. Times are naive UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

_BY_DB: dict[int, "Models"] = {}

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: The largest id a row can have (ids are signed 64-bit); a larger number names no row.
MAX_ROW_ID = 2**63 - 1
#: Every stored time: microseconds everywhere (MariaDB/MySQL's DATETIME keeps whole seconds
#: unless given fsp=6; PostgreSQL's TIMESTAMP and SQLite's text keep microseconds anyway).
#: Tables created before this kept seconds on MariaDB: see docs/health-and-recovery.md.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> dt.datetime:
    """Naive UTC now; every stored time uses it."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Models:
    """The model classes bound to one ``db``."""

    Notification: Any
    Banner: Any
    EmergencyEvent: Any
    AuditEntry: Any
    ControlState: Any
    RollbackStep: Any
    Drill: Any
    Incident: Any
    #: derived from ``Notification`` (rebuilt by ``rebuild-metrics``), so not in :attr:`all`
    HourlyTotal: Any = None

    @property
    def all(self) -> tuple[Any, ...]:
        return (self.Notification, self.Banner, self.EmergencyEvent, self.AuditEntry,
                self.ControlState, self.RollbackStep, self.Drill, self.Incident)


def models_for(db: Any) -> Models:
    """Return (building once) the models on ``db``."""
    key = id(db)
    if key not in _BY_DB:
        _BY_DB[key] = _build(db)
    return _BY_DB[key]


def _build(db: Any) -> Models:
    class Notification(db.Model):
        """One notification for one user; stored before any delivery is tried."""

        __tablename__ = "notify_emergency_notification"
        __table_args__ = (
            sa.Index("ix_notify_emergency_notification_claim", "user_id", "delivered", "id"),
            sa.Index("ix_notify_emergency_notification_backlog", "delivered", "created_at"),
            sa.Index("ix_notify_emergency_notification_created", "created_at", "channel"),
            # the sweep's "deadline passed" looks at rows in flight only, not the whole backlog
            sa.Index("ix_notify_emergency_notification_deadline", "delivered", "realtime_deadline"),
            # the sweep's "offer not confirmed in time" likewise
            sa.Index("ix_notify_emergency_notification_offered", "delivered", "offered_at"),
        )
        id = sa.Column(BigId, primary_key=True, autoincrement=True)
        user_id = sa.Column(sa.String(64), nullable=False)
        audience = sa.Column(sa.String(16), nullable=False, default="user")
        title = sa.Column(sa.String(500), nullable=False)
        message = sa.Column(sa.Text, nullable=False)
        priority = sa.Column(sa.String(8), nullable=False, default="normal")
        category = sa.Column(sa.String(64), nullable=False, default="system")
        data = sa.Column(sa.JSON, nullable=True)
        action_url = sa.Column(sa.String(500), nullable=True)
        created_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        delivered = sa.Column(sa.Boolean, nullable=False, default=False)
        delivered_at = sa.Column(Timestamp, nullable=True)
        channel = sa.Column(sa.String(16), nullable=True)
        attempts = sa.Column(sa.Integer, nullable=False, default=0)
        expires_at = sa.Column(Timestamp, nullable=True)
        #: while a real-time delivery awaits its acknowledgement, fallbacks leave the row alone
        realtime_deadline = sa.Column(Timestamp, nullable=True)
        claim_token = sa.Column(sa.String(32), nullable=True)
        #: a fallback (``flash``, ``poll``) offered the row to the browser then; it stays
        #: undelivered until the browser confirms showing it, and is offered again only when
        #: no confirmation came within ``NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT``
        offered_at = sa.Column(Timestamp, nullable=True)
        #: the channel of that offer: a confirmation counts the row as delivered by it
        offered_via = sa.Column(sa.String(16), nullable=True)

        def to_dict(self) -> dict[str, Any]:
            return notification_payload(self)

    class Banner(db.Model):
        """A site-wide message: one row per broadcast, shown to every user."""

        __tablename__ = "notify_emergency_banner"
        id = sa.Column(BigId, primary_key=True, autoincrement=True)
        title = sa.Column(sa.String(200), nullable=True)
        message = sa.Column(sa.Text, nullable=False)
        level = sa.Column(sa.String(16), nullable=False, default="warning")
        kind = sa.Column(sa.String(16), nullable=False, default="broadcast")
        created_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        created_by = sa.Column(sa.String(128), nullable=True)
        starts_at = sa.Column(Timestamp, nullable=True)
        ends_at = sa.Column(Timestamp, nullable=True)
        dismissed_at = sa.Column(Timestamp, nullable=True)
        dismissed_by = sa.Column(sa.String(128), nullable=True)

    class EmergencyEvent(db.Model):
        """One emergency: detection, classification, actions, resolution."""

        __tablename__ = "notify_emergency_event"
        __table_args__ = (sa.Index("ix_notify_emergency_event_detected", "detected_at"),
                          sa.Index("ix_notify_emergency_event_status", "status", "id"))
        id = sa.Column(BigId, primary_key=True, autoincrement=True)
        level = sa.Column(sa.Integer, nullable=False)
        failure_type = sa.Column(sa.String(40), nullable=False)
        status = sa.Column(sa.String(16), nullable=False, default="open")
        reason = sa.Column(sa.Text, nullable=True)
        evidence = sa.Column(sa.JSON, nullable=True)
        affected_users = sa.Column(sa.Integer, nullable=False, default=0)
        triggered_by = sa.Column(sa.String(128), nullable=True)
        started_at = sa.Column(Timestamp, nullable=True)
        detected_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        acknowledged_at = sa.Column(Timestamp, nullable=True)
        acknowledged_by = sa.Column(sa.String(128), nullable=True)
        resolved_at = sa.Column(Timestamp, nullable=True)
        resolved_by = sa.Column(sa.String(128), nullable=True)
        actions = sa.Column(sa.JSON, nullable=True)
        manual_intervention = sa.Column(sa.Boolean, nullable=False, default=False)
        recovered = sa.Column(sa.Boolean, nullable=True)

    class AuditEntry(db.Model):
        """Who did what, when, from where, with which arguments."""

        __tablename__ = "notify_emergency_audit"
        __table_args__ = (sa.Index("ix_notify_emergency_audit_at", "at"),)
        id = sa.Column(BigId, primary_key=True, autoincrement=True)
        at = sa.Column(Timestamp, nullable=False, default=utcnow)
        actor = sa.Column(sa.String(128), nullable=False)
        action = sa.Column(sa.String(64), nullable=False)
        source = sa.Column(sa.String(64), nullable=False)
        arguments = sa.Column(sa.JSON, nullable=True)
        outcome = sa.Column(sa.String(16), nullable=False, default="ok")
        detail = sa.Column(sa.Text, nullable=True)
        event_id = sa.Column(sa.BigInteger, nullable=True, index=True)

    class ControlState(db.Model):
        """The cluster's truth for mode, paused services and other switches."""

        __tablename__ = "notify_emergency_control"
        key = sa.Column(sa.String(64), primary_key=True)
        value = sa.Column(sa.JSON, nullable=True)
        updated_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        updated_by = sa.Column(sa.String(128), nullable=True)

    class RollbackStep(db.Model):
        """The rollback/restore journal: one row per step of one operation."""

        __tablename__ = "notify_emergency_rollback_step"
        id = sa.Column(BigId, primary_key=True, autoincrement=True)
        operation_id = sa.Column(sa.String(40), nullable=False, index=True)
        operation = sa.Column(sa.String(16), nullable=False)
        step = sa.Column(sa.String(40), nullable=False)
        status = sa.Column(sa.String(16), nullable=False)
        at = sa.Column(Timestamp, nullable=False, default=utcnow)
        actor = sa.Column(sa.String(128), nullable=True)
        detail = sa.Column(sa.JSON, nullable=True)

    class Drill(db.Model):
        """An emergency drill and its evaluation."""

        __tablename__ = "notify_emergency_drill"
        id = sa.Column(BigId, primary_key=True, autoincrement=True)
        drill_type = sa.Column(sa.String(40), nullable=False)
        started_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        ended_at = sa.Column(Timestamp, nullable=True)
        participants = sa.Column(sa.JSON, nullable=True)
        result = sa.Column(sa.JSON, nullable=True)

    class Incident(db.Model):
        """An incident record (the runbook's incident ticket), linked to an emergency event."""

        __tablename__ = "notify_emergency_incident"
        id = sa.Column(BigId, primary_key=True, autoincrement=True)
        title = sa.Column(sa.String(200), nullable=False)
        priority = sa.Column(sa.String(8), nullable=False)
        assignee = sa.Column(sa.String(128), nullable=True)
        status = sa.Column(sa.String(16), nullable=False, default="open")
        event_id = sa.Column(sa.BigInteger, nullable=True, index=True)
        created_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        created_by = sa.Column(sa.String(128), nullable=True)
        closed_at = sa.Column(Timestamp, nullable=True)

    class HourlyTotal(db.Model):
        """One measure of one hour, kept up to date as rows change (the dashboard's rollup).

        Measures: ``n:<channel>`` how many notifications created in the hour are in that
        channel now (``n:`` not delivered yet), spread over slot rows ``n:<channel>~<k>``
        that readers add up; ``e:events``, ``e:open``, ``e:resolved``,
        ``e:recovered``, ``e:mttd_us``/``e:mttd_n``, ``e:mttr_us``/``e:mttr_n`` of the events
        detected in the hour (sums in microseconds, and how many were summed). Written in the
        transaction of every change of those rows; the row at hour 0 (1970-01-01) marks it built.
        """

        __tablename__ = "notify_emergency_hourly"
        __table_args__ = (sa.Index("ix_notify_emergency_hourly_measure", "measure", "hour"),)
        hour = sa.Column(sa.Integer, primary_key=True, autoincrement=False)  # hours since 1970-01-01
        measure = sa.Column(sa.String(24), primary_key=True)
        total = sa.Column(sa.BigInteger, nullable=False, default=0)

    return Models(Notification, Banner, EmergencyEvent, AuditEntry, ControlState, RollbackStep, Drill, Incident,
                  HourlyTotal)


def notification_payload(row: Any) -> dict[str, Any]:
    """The JSON a client receives for one notification (socket, poll)."""
    return {
        "id": row.id,
        "title": row.title,
        "message": row.message,
        "priority": row.priority,
        "category": row.category,
        "data": row.data,
        "action_url": row.action_url,
        "created_at": row.created_at.isoformat() + "Z" if row.created_at else None,
    }

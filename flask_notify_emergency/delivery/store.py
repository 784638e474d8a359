"""The notification store: rows are written before delivery and claimed exactly once.

Claiming is one conditional UPDATE (``... WHERE delivered = false``) tagged with a random
token, so two workers or two tabs racing for the same rows each get a disjoint set.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa

from ..models import Models, notification_payload, utcnow

#: Claiming transactions one claim may run when other claimers keep taking its rows.
CLAIM_ROUNDS = 5


def _inserted_id(result: sa.engine.CursorResult[Any]) -> int:
    """The id of the one row an INSERT just wrote."""
    key = result.inserted_primary_key
    if key is None:  # SQLAlchemy returns None only when no row was inserted
        raise RuntimeError("flask-notify-emergency: the INSERT returned no primary key")
    return int(key[0])


class NotificationStore:
    """Reads and writes notification and banner rows through the host's engine."""

    def __init__(self, engine: sa.engine.Engine, models: Models) -> None:
        self.engine = engine
        self.models = models
        self.table = models.Notification.__table__
        self.banners = models.Banner.__table__

    def create(self, values: dict[str, Any]) -> int:
        """Insert one notification row and commit it; return its id."""
        with self.engine.begin() as conn:
            result = conn.execute(self.table.insert().values(**values))
        return _inserted_id(result)

    def claim(self, user_id: str, limit: int, channel: str) -> list[dict[str, Any]]:
        """Atomically take up to ``limit`` claimable rows of a user and mark them delivered.

        Rows another claimer took between our SELECT and UPDATE are skipped; we then look
        again, so a poll racing another tab still gets what is waiting instead of nothing.
        """
        claimed: list[dict[str, Any]] = []
        for _ in range(CLAIM_ROUNDS):
            selected, rows = self._claim_once(user_id, limit - len(claimed), channel)
            claimed += rows
            if len(rows) == selected or len(claimed) >= limit:
                break  # nobody raced us (or the batch is full): what is left is not claimable
        return claimed

    def _claim_once(self, user_id: str, limit: int, channel: str) -> tuple[int, list[dict[str, Any]]]:
        """One claiming transaction: (rows selected, rows this call marked delivered)."""
        t = self.table
        now = utcnow()
        token = uuid.uuid4().hex
        claimable = sa.and_(
            t.c.user_id == user_id,
            t.c.delivered == sa.false(),
            sa.or_(t.c.realtime_deadline.is_(None), t.c.realtime_deadline < now),
            sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now),
        )
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(
                sa.select(t.c.id).where(claimable).order_by(t.c.id).limit(limit))]
            if not ids:
                return 0, []
            conn.execute(
                t.update()
                .where(t.c.id.in_(ids), t.c.delivered == sa.false())
                .values(delivered=True, delivered_at=now, channel=channel, claim_token=token,
                        attempts=t.c.attempts + 1)
            )
            rows = conn.execute(sa.select(t).where(t.c.claim_token == token).order_by(t.c.id)).all()
        return len(ids), [dict(notification_payload(r), user_id=r.user_id) for r in rows]

    def acknowledge(self, notification_id: int, user_id: str, channel: str = "realtime") -> bool:
        """Mark one row delivered if it is the user's and not yet delivered; True if we did."""
        t = self.table
        with self.engine.begin() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.id == notification_id, t.c.user_id == user_id, t.c.delivered == sa.false())
                .values(delivered=True, delivered_at=utcnow(), channel=channel)
            )
        return bool(result.rowcount)

    def unclaim(self, ids: list[int], user_id: str, channel: str) -> int:
        """Return rows a claim of ``channel`` took for a response that will not show them to
        pending; only the user's own rows, only those that channel delivered. Returns how many."""
        if not ids:
            return 0
        t = self.table
        with self.engine.begin() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.id.in_(ids), t.c.user_id == user_id, t.c.delivered == sa.true(),
                       t.c.channel == channel)
                .values(delivered=False, delivered_at=None, channel=None, claim_token=None,
                        realtime_deadline=None)
            )
        return int(result.rowcount or 0)

    def release_realtime(self, ids: list[int]) -> list[tuple[int, str]]:
        """Hand rows whose ack never came to the fallbacks; return (id, user) still undelivered."""
        if not ids:
            return []
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id.in_(ids), t.c.delivered == sa.false())
                         .values(realtime_deadline=None))
            rows = conn.execute(sa.select(t.c.id, t.c.user_id)
                                .where(t.c.id.in_(ids), t.c.delivered == sa.false())).all()
        return [(int(r[0]), str(r[1])) for r in rows]

    def pending_user_ids(self) -> set[str]:
        """Users with at least one claimable undelivered notification."""
        t = self.table
        now = utcnow()
        q = sa.select(t.c.user_id).where(
            t.c.delivered == sa.false(),
            sa.or_(t.c.realtime_deadline.is_(None), t.c.realtime_deadline < now),
            sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now),
        ).distinct()
        with self.engine.connect() as conn:
            return {str(r[0]) for r in conn.execute(q)}

    def overdue(self, grace: float = 0.0) -> list[tuple[int, str]]:
        """Rows whose real-time deadline passed without an acknowledgement."""
        t = self.table
        cutoff = utcnow() - dt.timedelta(seconds=grace)
        q = sa.select(t.c.id, t.c.user_id).where(
            t.c.delivered == sa.false(), t.c.realtime_deadline.is_not(None), t.c.realtime_deadline < cutoff)
        with self.engine.connect() as conn:
            return [(int(r[0]), str(r[1])) for r in conn.execute(q.limit(1000))]

    def payloads(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """The client payload (with ``user_id``) of each of these rows, by id."""
        if not ids:
            return {}
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.id.in_(ids))).all()
        return {int(r.id): dict(notification_payload(r), user_id=r.user_id) for r in rows}

    def get(self, notification_id: int) -> dict[str, Any] | None:
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == notification_id)).first()
        return dict(row._mapping) if row else None

    def backlog(self) -> tuple[int, dt.datetime | None]:
        """(count of undelivered rows, created_at of the oldest)."""
        t = self.table
        with self.engine.connect() as conn:
            count, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(t.c.created_at)).where(t.c.delivered == sa.false())
            ).one()
        return int(count or 0), oldest

    # -- banners -----------------------------------------------------------------------------
    def create_banner(self, values: dict[str, Any]) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(self.banners.insert().values(**values))
        return _inserted_id(result)

    def active_banners(self, include_scheduled: bool = False) -> list[dict[str, Any]]:
        """Banners showing now (and, with ``include_scheduled``, those yet to start)."""
        b = self.banners
        now = utcnow()
        started = sa.true() if include_scheduled else sa.or_(b.c.starts_at.is_(None), b.c.starts_at <= now)
        q = (sa.select(b).where(
            b.c.dismissed_at.is_(None),
            started,
            sa.or_(b.c.ends_at.is_(None), b.c.ends_at > now),
        ).order_by(b.c.id.desc()).limit(20))
        with self.engine.connect() as conn:
            return [banner_payload(r) for r in conn.execute(q)]

    def dismiss_banner(self, banner_id: int | None, actor: str, kind: str | None = None) -> int:
        """Dismiss one banner (or every active one of ``kind``); return how many."""
        b = self.banners
        cond = [b.c.dismissed_at.is_(None)]
        if banner_id is not None:
            cond.append(b.c.id == banner_id)
        if kind is not None:
            cond.append(b.c.kind == kind)
        with self.engine.begin() as conn:
            result = conn.execute(b.update().where(*cond).values(dismissed_at=utcnow(), dismissed_by=actor))
        return int(result.rowcount or 0)


def banner_payload(row: Any) -> dict[str, Any]:
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() + "Z" if v else None

    return {
        "id": row.id, "title": row.title, "message": row.message, "level": row.level,
        "kind": row.kind, "created_at": iso(row.created_at), "created_by": row.created_by,
        "starts_at": iso(row.starts_at), "ends_at": iso(row.ends_at),
    }

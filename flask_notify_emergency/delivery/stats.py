"""What the stored rows say about delivery: failure rate of the real-time path, stuck rows.

A row's columns tell its story (see :mod:`.dispatcher`): ``attempts`` is 1 when ``send()``
tried the socket and 0 when it skipped it; a fallback's offer the browser confirmed adds 1
(an offer still awaiting its confirmation is undelivered and adds nothing); an acknowledged
row has ``channel = 'realtime'``. So, among rows created in the window:

* **attempted over the socket** = ``channel = 'realtime'``, or ``attempts >= 2`` (tried,
  then delivered by a fallback), or ``attempts >= 1`` and still undelivered;
* rows still inside their acknowledgement deadline are in flight and not judged yet;
* **failed** = attempted and not delivered by the socket.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from ..models import utcnow


def delivery_stats(ext: Any, window: float) -> dict[str, Any]:
    """Real-time attempts, failures, failure rate and users with failures over ``window`` s."""
    t = ext.models.Notification.__table__
    now = utcnow()
    attempted = sa.or_(t.c.channel == "realtime", t.c.attempts >= 2,
                       sa.and_(t.c.attempts >= 1, t.c.delivered == sa.false()))
    in_flight = sa.and_(t.c.delivered == sa.false(), t.c.realtime_deadline.is_not(None),
                        t.c.realtime_deadline > now)
    failed = sa.or_(t.c.channel.is_(None), t.c.channel != "realtime")
    q = sa.select(
        sa.func.count(),
        sa.func.sum(sa.case((failed, 1), else_=0)),
        sa.func.count(sa.distinct(sa.case((failed, t.c.user_id), else_=None))),
    ).where(t.c.created_at >= now - dt.timedelta(seconds=window), attempted, sa.not_(in_flight))
    with ext.engine.connect() as conn:
        total, bad, users = conn.execute(q).one()
    total, bad = int(total or 0), int(bad or 0)
    return {"window_seconds": window, "attempted": total, "failed": bad,
            "failure_rate": round(bad / total, 4) if total else None, "failed_users": int(users or 0)}


#: Socket acknowledgements read by :func:`socket_ack_seconds` (the latest of the window).
ACK_SAMPLE_ROWS = 500


def socket_ack_seconds(ext: Any, window: float) -> dict[str, Any]:
    """How long the latest socket acknowledgements of the window took, from the row's creation
    to its acknowledgement: ``{"sample", "median", "p90"}`` (seconds; None without any).

    Read only when the failure rate is over its threshold, to tell slow from failing: under
    overload the acknowledgements still come, later and later, and those past
    ``ACK_TIMEOUT`` count as failures; when the path fails, the ones that come are quick.
    """
    t = ext.models.Notification.__table__
    now = utcnow()
    q = (sa.select(t.c.created_at, t.c.delivered_at)
         .where(t.c.created_at >= now - dt.timedelta(seconds=window), t.c.channel == "realtime",
                t.c.delivered_at.is_not(None))
         .order_by(t.c.created_at.desc()).limit(ACK_SAMPLE_ROWS))
    with ext.engine.connect() as conn:
        took = sorted(max(0.0, (delivered - created).total_seconds()) for created, delivered in conn.execute(q))
    if not took:
        return {"sample": 0, "median": None, "p90": None}
    return {"sample": len(took), "median": round(took[len(took) // 2], 3),
            "p90": round(took[min(len(took) - 1, int(len(took) * 0.9))], 3)}


def rate_exceeded(stats: dict[str, Any], threshold: float, min_sample: int) -> bool:
    """True when at least ``min_sample`` attempts failed at a rate above ``threshold``."""
    rate = stats.get("failure_rate")
    return rate is not None and stats.get("attempted", 0) >= min_sample and rate > threshold


#: Users per query of :func:`stuck_backlog` (an ``IN`` list every database takes).
STUCK_USERS_PER_QUERY = 500


def stuck_backlog(ext: Any, max_age: float, limit: int = 1000) -> dict[str, float]:
    """Users with a live socket whose oldest claimable row waited over ``max_age`` s: age each.

    Rows of offline users wait by design (they are flashed on the next visit); a connected
    user's rows should reach them within seconds, by socket or polling. So only the rows of
    connected users are read, through the ``(user_id, delivered, id)`` index: the cost follows
    the connected users, not the whole undelivered backlog (hundreds of thousands of rows of
    users who never came back, at 10,000,000 rows).
    """
    t = ext.models.Notification.__table__
    now = utcnow()
    connected = sorted(ext.state.connected_user_ids())
    found: dict[str, float] = {}
    with ext.engine.connect() as conn:
        for start in range(0, len(connected), STUCK_USERS_PER_QUERY):
            q = (sa.select(t.c.user_id, sa.func.min(t.c.created_at))
                 .where(t.c.user_id.in_(connected[start:start + STUCK_USERS_PER_QUERY]),
                        t.c.delivered == sa.false(), t.c.created_at < now - dt.timedelta(seconds=max_age),
                        sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now),
                        sa.or_(t.c.realtime_deadline.is_(None), t.c.realtime_deadline < now))
                 .group_by(t.c.user_id))
            for uid, oldest in conn.execute(q):
                found[str(uid)] = round((now - oldest).total_seconds(), 1)
            if len(found) >= limit:
                break
    return dict(sorted(found.items())[:limit])

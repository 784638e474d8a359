"""The dashboard's metrics, computed from stored data over a window (1h, 24h, 7d, 30d).

Every metric is an aggregate computed by the database (``COUNT``/``SUM``/``AVG`` with
``GROUP BY``), never a Python loop over rows, and every windowed query is a range on an
indexed time column (``notification.created_at``, ``event.detected_at``). The deliveries of
a window with whole-hour buckets (24h, 7d, 30d) come from the hourly totals
(:mod:`..delivery.hourly`), the same numbers as counting the rows; the 1h window's from the
index ``(created_at, channel)`` alone, without reading rows.

Definitions (``window`` = the last 1h/24h/7d/30d, by creation or detection time):

* **delivery success rate** = notifications created in the window that reached their user
  (acknowledged over the socket, or claimed by a flash or a poll) / notifications created
  in the window (every stored notification is an attempt). ``None`` when nothing was sent.
* **real-time share** = delivered over the socket (``channel = 'realtime'``) / attempted.
* **deliveries by channel** = the same rows grouped by time bucket and channel
  (``realtime``, ``flash``, ``poll``; ``undelivered`` when not delivered yet).
* **connected users** = users with at least one open socket (``state.connected_users()``).
* **disconnect ratio** = recent recipients (users sent one of the newest ``RECENT_ROWS``
  notifications of the last ``RECENT_SECONDS``, at most ``RECENT_SAMPLE`` of them) without an
  open socket / recent recipients. ``None`` when nobody was sent anything recently.
* **database** = whether ``SELECT 1`` succeeds, and its round trip in milliseconds.
* **emergency event count** = events detected in the window (and how many are still open).
* **recovery success rate** = events resolved in the window with ``recovered = True`` /
  events resolved in the window.
* **MTTD** = mean of ``detected_at - started_at``; **MTTR** = mean of
  ``resolved_at - detected_at``, both in seconds (to the millisecond) over the events of the
  window. ``started_at`` is the failure's start as :mod:`..detect.evidence` knows it (the
  earliest failed delivery, acknowledgement timeout or failed check since the last passing
  check, else that check), ``detected_at`` when the monitor's failing check ended.
* **rollback success rate** = ``rollback.rollback_success_rate(ext, since)`` when present.
* **health score** = ``health.run_health_checks(ext).to_dict()["score"]``, from the last
  report: the first overview runs the checks, later ones show the last report and, when it
  is older than ``HEALTH_MAX_AGE`` seconds, re-run them in the background (a run is not free:
  it sends a canary and may wait for its timeout).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..communicate import dashboard_status
from ..delivery import hourly
from ..detect import run_health_checks
from ..models import utcnow
from ..respond import current_event
from ..rollback import rollback_success_rate

#: name -> (length in seconds, bucket size in seconds) of the time series.
WINDOWS: dict[str, tuple[int, int]] = {
    "1h": (3600, 60),
    "24h": (86400, 3600),
    "7d": (7 * 86400, 6 * 3600),
    "30d": (30 * 86400, 86400),
}
DEFAULT_WINDOW = "24h"
CHANNELS = ("realtime", "flash", "poll", "undelivered")
RECENT_SECONDS = 900
RECENT_SAMPLE = 1000
RECENT_ROWS = 20_000
HEALTH_MAX_AGE = 60.0
CACHE_KEY = "notify_emergency_dashboard"


@dataclass(frozen=True)
class Window:
    """A metrics window: its name, start and the size of its time-series buckets."""

    name: str
    seconds: int
    bucket_seconds: int
    since: dt.datetime
    until: dt.datetime

    @property
    def buckets(self) -> int:
        # the newest row (at ``until``) falls in the last bucket, never past it
        return int((self.until - self.since).total_seconds() // self.bucket_seconds) + 1


def parse_window(value: str | None, now: dt.datetime | None = None) -> Window:
    """``'1h'``, ``'24h'``, ``'7d'`` or ``'30d'`` (None: the default); ValueError otherwise."""
    name = value or DEFAULT_WINDOW
    if name not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}; got {value!r}.")
    seconds, bucket = WINDOWS[name]
    until = now or utcnow()
    # buckets start on a multiple of their size, so a chart does not shift every second
    start = until - dt.timedelta(seconds=seconds)
    epoch = dt.datetime(1970, 1, 1)
    aligned = epoch + dt.timedelta(seconds=(int((start - epoch).total_seconds()) // bucket) * bucket)
    return Window(name, seconds, bucket, aligned, until)


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


# -- SQL helpers -------------------------------------------------------------------------
def seconds_between(dialect: str, start: Any, end: Any, precise: bool = False) -> Any:
    """SQL expression: seconds from ``start`` to ``end`` (two datetime expressions); whole
    seconds on MariaDB/MySQL unless ``precise`` (microseconds: MTTD and MTTR)."""
    if dialect == "sqlite":
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0
    if dialect in ("mysql", "mariadb"):
        if precise:
            return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), start, end) / 1000000.0
        return sa.func.timestampdiff(sa.literal_column("SECOND"), start, end)
    if dialect == "postgresql":
        return sa.func.extract("epoch", end - start)
    raise NotImplementedError(f"flask-notify-emergency metrics do not support the {dialect!r} dialect yet.")


def bucket_index(dialect: str, column: Any, since: dt.datetime, bucket_seconds: int) -> Any:
    """SQL expression: which bucket of ``bucket_seconds`` after ``since`` ``column`` falls in."""
    if dialect == "sqlite":
        # whole seconds (the fraction cut off as text: SQLite rounds it to milliseconds, so
        # xx:59.9999 would become the next minute) and integer division; julianday()'s
        # floating point put a row stored exactly on a boundary into the bucket before
        since_epoch = int((since - dt.datetime(1970, 1, 1)).total_seconds())
        whole = sa.func.strftime("%s", sa.func.substr(column, 1, 19))
        seconds = (sa.cast(whole, sa.Integer) - since_epoch).self_group()
        return seconds.op("/")(bucket_seconds)
    start = sa.literal(since, sa.DateTime)
    if dialect == "postgresql":
        # date_part is double precision (exact for any interval of whole microseconds up to
        # years); EXTRACT is numeric since PostgreSQL 14, and its division took 4x as long
        diff = sa.func.date_part("epoch", column - start)
        return sa.cast(sa.func.floor(diff / bucket_seconds), sa.Integer)
    diff = seconds_between(dialect, start, column)
    if dialect in ("mysql", "mariadb"):  # integer division: half the time of FLOOR(x / n) there
        return diff.op("DIV")(bucket_seconds)
    return sa.cast(sa.func.floor(diff / bucket_seconds), sa.Integer)


def _dialect(ext: Any) -> str:
    return str(ext.engine.dialect.name)


def _rate(part: int | float, whole: int | float) -> float | None:
    return round(part / whole, 4) if whole else None


# -- notifications -----------------------------------------------------------------------
def counted_by_hour(window: Window) -> bool:
    """Can this window be answered from whole hours? (Its buckets start on hour boundaries.)"""
    return window.bucket_seconds % 3600 == 0 and window.since == hourly.hour_of(window.since)


def delivery_groups_from_rows(ext: Any, window: Window) -> list[tuple[Any, Any, int]]:
    """(bucket, channel, count) of the window's rows: one GROUP BY over the rows in range."""
    t = ext.models.Notification.__table__
    bucket = bucket_index(_dialect(ext), t.c.created_at, window.since, window.bucket_seconds).label("bucket")
    q = (sa.select(bucket, t.c.channel, sa.func.count().label("n"))
         .where(t.c.created_at >= window.since)
         .group_by(bucket, t.c.channel))
    with ext.engine.connect() as conn:
        return [(r[0], r[1], int(r[2])) for r in conn.execute(q)]


def delivery_groups_from_hours(ext: Any, window: Window) -> list[tuple[Any, Any, int]]:
    """The same from the hourly totals: a few hundred rows, however many notifications."""
    if not counted_by_hour(window):
        raise ValueError(f"the {window.name} window's buckets are not whole hours")
    return [(bucket, channel or None, total) for bucket, channel, total
            in ext.store.hourly.buckets(window.since, window.bucket_seconds // 3600, hourly.NOTIFICATION)]


def delivery_metrics(ext: Any, window: Window, *, from_hours: bool | None = None,
                     groups: list[tuple[Any, Any, int]] | None = None) -> dict[str, Any]:
    """Success rate, totals by channel and the time series of the window.

    ``from_hours`` None: from the hourly totals when they are built and the window's
    buckets are whole hours (else from the rows, and the counts are built in the
    background); True/False forces one source. ``groups``: the hourly totals' (bucket,
    channel, count), already read (by :func:`overview`).
    """
    if groups is not None:
        from_hours = True
    else:
        from_hours = from_hourly_totals(ext, window, from_hours)
        groups = delivery_groups_from_hours(ext, window) if from_hours else delivery_groups_from_rows(ext, window)
    series = {name: [0] * window.buckets for name in CHANNELS}
    totals = dict.fromkeys(CHANNELS, 0)
    other = 0
    for index, channel, count in groups:  # one row per (bucket, channel): a few hundred at most
        name = channel if channel in CHANNELS else ("undelivered" if channel is None else None)
        if name is None:
            other += int(count)
            continue
        totals[name] += int(count)
        if index is not None and 0 <= int(index) < window.buckets:
            series[name][int(index)] += int(count)
    attempted = sum(totals.values()) + other
    delivered = attempted - totals["undelivered"]
    starts = [iso(window.since + dt.timedelta(seconds=i * window.bucket_seconds)) for i in range(window.buckets)]
    return {
        "attempted": attempted, "delivered": delivered, "undelivered": totals["undelivered"],
        "by_channel": dict(totals, other=other),
        "success_rate": _rate(delivered, attempted),
        "realtime_share": _rate(totals["realtime"], attempted),
        "series": {"bucket_seconds": window.bucket_seconds, "starts": starts, "channels": series},
        "source": "hourly totals" if from_hours else "rows",
    }


def backlog_metrics(ext: Any, *, from_hours: bool | None = None) -> dict[str, Any]:
    """Undelivered notifications now and the age of the oldest (index on delivered, created_at).

    The count comes from the hourly totals when they are built (every hour's ``n:``: a row
    is stored with a channel only when it is delivered, and delivered only with one), else
    from the index; the oldest is the index's first entry either way.
    """
    t = ext.models.Notification.__table__
    # "delivered = false", which every database answers from the (delivered, created_at)
    # index; "delivered IS false" makes MariaDB scan all of it
    undelivered = t.c.delivered == sa.false()
    if from_hours is None:
        from_hours = ext.store.hourly.ready()
    with ext.engine.connect() as conn:
        if from_hours:
            oldest = conn.execute(sa.select(sa.func.min(t.c.created_at)).where(undelivered)).scalar()
            count = ext.store.hourly.total(hourly.NOTIFICATION)
        else:
            count, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(t.c.created_at)).where(undelivered)).one()
    return backlog_result(count, oldest)


def backlog_result(count: Any, oldest: dt.datetime | None) -> dict[str, Any]:
    count = int(count or 0)
    age = (utcnow() - oldest).total_seconds() if oldest else None
    return {"undelivered": count, "oldest_at": iso(oldest), "oldest_age_seconds": round(age, 1) if age else None}


def connection_metrics(ext: Any) -> dict[str, Any]:
    """Open sockets now, and the share of recent recipients without one."""
    t = ext.models.Notification.__table__
    recent = utcnow() - dt.timedelta(seconds=RECENT_SECONDS)
    # the newest rows first, through the created_at index, and bounded: a plain DISTINCT lets
    # SQLite walk the whole (user_id, ...) index instead, seconds on a million rows
    newest = (sa.select(t.c.user_id).where(t.c.created_at >= recent)
              .order_by(t.c.created_at.desc()).limit(RECENT_ROWS).subquery())
    q = sa.select(newest.c.user_id).distinct().limit(RECENT_SAMPLE)
    with ext.engine.connect() as conn:
        recipients = [str(r[0]) for r in conn.execute(q)]
    state = ext.state
    offline = sum(1 for uid in recipients if not state.is_connected(uid))
    return {
        "connected_users": state.connected_users(),
        "recent_recipients": len(recipients),
        "recent_recipients_offline": offline,
        "disconnect_ratio": _rate(offline, len(recipients)),
        "disconnect_threshold": ext.app.config["NOTIFY_EMERGENCY_DISCONNECT_RATIO"],
        "socket_enabled": ext.socketio is not None,
        "state_backend": getattr(state, "backend", "memory"),
        "state_healthy": bool(getattr(state, "healthy", True)),
    }


def database_metrics(ext: Any) -> dict[str, Any]:
    """``SELECT 1``: does the database answer, and how fast."""
    start = time.perf_counter()
    try:
        with ext.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # the dashboard must show a database outage, not die of it
        return {"ok": False, "latency_ms": None, "error": f"{type(exc).__name__}: {exc}"[:300],
                "dialect": _dialect(ext)}
    return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2), "error": None,
            "dialect": _dialect(ext)}


# -- events ------------------------------------------------------------------------------
def from_hourly_totals(ext: Any, window: Window, from_hours: bool | None, *, ready: bool | None = None) -> bool:
    """Read the window from the hourly totals? (None: when they are built (``ready``, asked
    of the database when not given) and the window's buckets are whole hours; while they are
    not built, build them in the background.)"""
    if from_hours is not None:
        return from_hours
    if not counted_by_hour(window):
        return False
    if ext.store.hourly.ready() if ready is None else ready:
        return True
    cache_for(ext).rebuild.start(ext)
    return False


def event_metrics(ext: Any, window: Window, *, from_hours: bool | None = None) -> dict[str, Any]:
    """Count, open, recovery success rate, MTTD and MTTR of the window's events."""
    if from_hourly_totals(ext, window, from_hours):
        return event_metrics_of(ext.store.hourly.totals_since(window.since, hourly.EVENT))
    t = ext.models.EmergencyEvent.__table__
    dialect = _dialect(ext)
    resolved = t.c.status == "resolved"
    q = sa.select(
        sa.func.count(),
        sa.func.sum(sa.case((t.c.status == "open", 1), else_=0)),
        sa.func.sum(sa.case((resolved, 1), else_=0)),
        sa.func.sum(sa.case((sa.and_(resolved, t.c.recovered == sa.true()), 1), else_=0)),
        sa.func.avg(seconds_between(dialect, t.c.started_at, t.c.detected_at, precise=True)),
        sa.func.avg(sa.case((t.c.resolved_at.is_not(None),
                             seconds_between(dialect, t.c.detected_at, t.c.resolved_at, precise=True)),
                            else_=None)),
    ).where(t.c.detected_at >= window.since)
    with ext.engine.connect() as conn:
        count, open_, resolved_n, recovered_n, mttd, mttr = conn.execute(q).one()
    return _event_result(count, open_, resolved_n, recovered_n, mttd, mttr, "rows")


def event_metrics_of(totals: Any) -> dict[str, Any]:
    """:func:`event_metrics` from the ``e:`` hourly totals of the window, summed by measure."""
    count, open_, resolved_n, recovered_n = (totals[k] for k in ("events", "open", "resolved", "recovered"))
    mttd = totals["mttd_us"] / totals["mttd_n"] / 1e6 if totals["mttd_n"] else None
    mttr = totals["mttr_us"] / totals["mttr_n"] / 1e6 if totals["mttr_n"] else None
    return _event_result(count, open_, resolved_n, recovered_n, mttd, mttr, "hourly totals")


def _event_result(count: Any, open_: Any, resolved_n: Any, recovered_n: Any, mttd: Any, mttr: Any,
                  source: str) -> dict[str, Any]:
    resolved_n, recovered_n = int(resolved_n or 0), int(recovered_n or 0)
    return {
        "count": int(count or 0), "open": int(open_ or 0), "resolved": resolved_n, "recovered": recovered_n,
        "recovery_success_rate": _rate(recovered_n, resolved_n),
        "mttd_seconds": None if mttd is None else round(float(mttd), 3),
        "mttr_seconds": None if mttr is None else round(float(mttr), 3),
        "source": source,
    }


# -- optional services -------------------------------------------------------------------
def rollback_metrics(ext: Any, window: Window) -> dict[str, Any]:
    """Rollback success rate of the window, or why it could not be computed."""
    try:
        value = rollback_success_rate(ext, window.since)
    except Exception as exc:  # a failing optional metric must not take the overview down
        return {"available": True, "success_rate": None, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    if isinstance(value, dict):
        return dict(value, available=True)
    return {"available": True, "success_rate": None if value is None else round(float(value), 4), "detail": None}


class MetricsCache:
    """Per-app cache of the last health report (running the checks sends a canary)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.health: dict[str, Any] | None = None
        self.health_at = 0.0
        self.refreshing = False
        self.rebuild = hourly.BackgroundRebuild()

    def refresh_in_background(self, ext: Any) -> None:
        """Re-run the checks in a thread; the page keeps the last report meanwhile."""
        with self.lock:
            if self.refreshing:
                return
            self.refreshing = True

        def run() -> None:
            try:
                with ext.app.app_context():
                    run_health(ext)
            except Exception as exc:  # the next request tries again
                ext.app.logger.warning("flask-notify-emergency: dashboard health refresh failed: %s", exc)
            finally:
                with self.lock:
                    self.refreshing = False

        threading.Thread(target=run, name="notify-emergency-dashboard-health", daemon=True).start()


def cache_for(ext: Any) -> MetricsCache:
    """The app's :class:`MetricsCache` (in ``app.extensions``, never a module global)."""
    return ext.app.extensions.setdefault(CACHE_KEY, MetricsCache())


def run_health(ext: Any, only: Any = None) -> dict[str, Any]:
    """Run the health checks now and remember the report."""
    report = run_health_checks(ext, only=only).to_dict()
    if only is None:
        cache = cache_for(ext)
        with cache.lock:
            cache.health, cache.health_at = report, time.monotonic()
    return report


def health_metrics(ext: Any, max_age: float = HEALTH_MAX_AGE) -> dict[str, Any]:
    """The health score and failing checks, from a report at most ``max_age`` seconds old."""
    cache = cache_for(ext)
    report = cache.health
    if report is not None and time.monotonic() - cache.health_at > max_age:
        cache.refresh_in_background(ext)  # never make the overview wait for a canary
    if report is None:
        try:
            report = run_health(ext)
        except Exception as exc:  # show the failure, keep the page
            return {"available": True, "score": None, "status": "error", "failing": [],
                    "detail": f"{type(exc).__name__}: {exc}"[:300]}
    checks = report.get("checks") or {}
    return {"available": True, "score": report.get("score"), "status": report.get("status"),
            "checked_at": report.get("checked_at"),
            "failing": sorted(name for name, c in checks.items() if not c.get("ok")), "detail": None}


# -- the overview ------------------------------------------------------------------------
def overview(ext: Any, window: Window, *, health_max_age: float = HEALTH_MAX_AGE) -> dict[str, Any]:
    """Everything the overview page shows, as JSON-ready data."""
    database = database_metrics(ext)
    result: dict[str, Any] = {
        "generated_at": iso(utcnow()),
        "window": {"name": window.name, "since": iso(window.since), "until": iso(window.until),
                   "bucket_seconds": window.bucket_seconds},
        "mode": ext.control.mode,
        "paused": ext.control.paused(),
        "breaker": ext.breaker.current,
        "connections": None, "database": database, "delivery": None, "backlog": None,
        "events": None, "current_event": None, "dashboard_status": None, "errors": {},
    }
    # every statement is a round trip, and on a busy server each waits its turn: whether the
    # hourly totals are built, the backlog, and the window's deliveries and events are read
    # together (two statements), and only the parts that need the rows read them
    read: dict[str, Any] = {}

    def backlog() -> dict[str, Any]:
        snapshot = ext.store.hourly.backlog_and_ready(ext.models.Notification.__table__)
        read["ready"] = bool(snapshot and snapshot[0])
        if not read["ready"]:
            return backlog_metrics(ext, from_hours=False)
        assert snapshot is not None
        return backlog_result(snapshot[1], snapshot[2])

    def from_hours() -> bool:
        if "by_hour" not in read:
            by_hour = from_hourly_totals(ext, window, None, ready=read.get("ready"))
            if by_hour:
                read.update(ext.store.hourly.buckets_of_families(
                    window.since, window.bucket_seconds // 3600, (hourly.NOTIFICATION, hourly.EVENT)))
            read["by_hour"] = by_hour
        return bool(read["by_hour"])

    def delivery() -> dict[str, Any]:
        if not from_hours():
            return delivery_metrics(ext, window, from_hours=False)
        return delivery_metrics(ext, window, groups=[(b, c or None, v) for b, c, v in read[hourly.NOTIFICATION]])

    def events() -> dict[str, Any]:
        if not from_hours():
            return event_metrics(ext, window, from_hours=False)
        totals: Counter[str] = Counter()
        for _, measure, total in read[hourly.EVENT]:
            totals[measure] += total
        return event_metrics_of(totals)

    parts = {
        "connections": lambda: connection_metrics(ext),
        "backlog": backlog,
        "delivery": delivery,
        "events": events,
        "current_event": lambda: current_event(ext),
        "dashboard_status": lambda: dashboard_status(ext),  # the team's status (update-dashboard)
    }
    for name, compute in parts.items():
        if not database["ok"] and name != "connections":
            result["errors"][name] = "database unreachable"
            continue
        try:
            result[name] = compute()
        except Exception as exc:  # one failing part must not blank the whole dashboard
            result["errors"][name] = f"{type(exc).__name__}: {exc}"[:300]
    result["rollback"] = rollback_metrics(ext, window)
    result["health"] = health_metrics(ext, health_max_age)
    return result

"""Per-hour notification counts by channel: the rollup behind the dashboard's long windows.

``notify_emergency_notification_hour`` holds, for every hour and channel, how many
notifications *created* in that hour are in that channel *now* (``''``: not delivered yet).
The store changes it in the same transaction as the rows themselves, so it is never behind:

* a stored row adds 1 to (its hour, its channel);
* a delivered row (acknowledged, flashed, polled, however late) moves 1 from (its hour, ``''``)
  to (its hour, the channel);
* a deleted row takes 1 away.

Changes are upserts (``ON CONFLICT`` / ``ON DUPLICATE KEY``), applied in (hour, channel) order
so two transactions never wait on each other's rows in opposite orders.

The counts are only trusted once :func:`rebuild` has counted the rows that were stored
before (it ends by writing the marker row at ``READY_HOUR``); until then the dashboard
counts the raw rows. ``rebuild`` goes one day of rows at a time, each in a short
transaction that keeps concurrent writers out of the hours it recounts (PostgreSQL: a table
lock; MariaDB: the range locks of its DELETE; SQLite: one writer at a time anyway).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ..models import Models, utcnow

log = logging.getLogger("flask_notify_emergency")

#: The marker row's hour (before any notification) and channel.
READY_HOUR = dt.datetime(1970, 1, 1)
READY_CHANNEL = "#ready"
#: Hours recounted per transaction by :func:`rebuild`.
REBUILD_CHUNK_HOURS = 24
#: Seconds before a missing table is looked for again (the host may create it meanwhile).
RECHECK_SECONDS = 30.0

Key = tuple[dt.datetime, str]


def hour_of(when: dt.datetime) -> dt.datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def channel_key(channel: str | None) -> str:
    return channel or ""


class HourlyCounts:
    """The rollup table of one app: changes in a writer's transaction, reads, readiness."""

    def __init__(self, engine: sa.engine.Engine, models: Models) -> None:
        self.engine = engine
        self.table: sa.Table | None = models.NotificationHour.__table__ if models.NotificationHour else None
        self._present: bool | None = None
        self._checked_at = 0.0

    # -- writing, inside the caller's transaction ------------------------------------------
    def present(self, conn: sa.Connection) -> bool:
        """Does the table exist? (A host that has not created it yet still sends.)"""
        if self.table is None:
            return False
        if self._present or (self._present is False and time.monotonic() - self._checked_at < RECHECK_SECONDS):
            return bool(self._present)
        self._present = sa.inspect(conn).has_table(self.table.name)
        self._checked_at = time.monotonic()
        if not self._present:
            log.warning("flask-notify-emergency: table %s is missing (run db.create_all() or your migrations, "
                        "then `flask emergency rebuild-metrics`); the dashboard counts raw rows meanwhile",
                        self.table.name)
        return self._present

    def change(self, conn: sa.Connection, deltas: Counter[Key]) -> None:
        """Add ``deltas`` ((hour, channel) -> +n/-n) in the caller's transaction."""
        rows = [{"hour": hour, "channel": channel, "total": n}
                for (hour, channel), n in sorted(deltas.items()) if n]
        if not rows or not self.present(conn):
            return
        assert self.table is not None
        conn.execute(_upsert(conn.dialect.name, self.table, add=True), rows)

    def added(self, conn: sa.Connection, rows: Iterable[dict[str, Any]]) -> None:
        """Rows just inserted (each with ``created_at`` and maybe ``channel``)."""
        self.change(conn, Counter((hour_of(r["created_at"]), channel_key(r.get("channel"))) for r in rows))

    def moved(self, conn: sa.Connection, rows: Iterable[tuple[dt.datetime, str | None, str | None]]) -> None:
        """Rows whose channel changed: (created_at, old channel, new channel) each."""
        deltas: Counter[Key] = Counter()
        for created_at, old, new in rows:
            hour = hour_of(created_at)
            deltas[(hour, channel_key(old))] -= 1
            deltas[(hour, channel_key(new))] += 1
        self.change(conn, deltas)

    def removed(self, conn: sa.Connection, rows: Iterable[tuple[dt.datetime, str | None]]) -> None:
        """Rows just deleted: (created_at, channel) each."""
        deltas: Counter[Key] = Counter()
        for created_at, channel in rows:
            deltas[(hour_of(created_at), channel_key(channel))] -= 1
        self.change(conn, deltas)

    # -- reading ---------------------------------------------------------------------------
    def ready(self) -> bool:
        """Has :func:`rebuild` counted every older row (and nothing undone it since)?"""
        if self.table is None:
            return False
        t = self.table
        try:
            with self.engine.connect() as conn:
                if not self.present(conn):
                    return False
                return conn.execute(sa.select(t.c.total).where(
                    t.c.hour == READY_HOUR, t.c.channel == READY_CHANNEL)).first() is not None
        except sa.exc.SQLAlchemyError:
            return False

    def since(self, start: dt.datetime) -> list[tuple[dt.datetime, str, int]]:
        """(hour, channel, count) of every hour from ``start`` (an hour boundary) on."""
        assert self.table is not None
        t = self.table
        q = sa.select(t.c.hour, t.c.channel, t.c.total).where(t.c.hour >= start, t.c.total != 0)
        with self.engine.connect() as conn:
            return [(r[0], str(r[1]), int(r[2])) for r in conn.execute(q)]

    def invalidate(self) -> None:
        """Distrust the counts until the next :func:`rebuild` (rows were changed behind the store)."""
        if self.table is None:
            return
        t = self.table
        with self.engine.begin() as conn:
            if self.present(conn):
                conn.execute(t.delete().where(t.c.hour == READY_HOUR, t.c.channel == READY_CHANNEL))


def _upsert(dialect: str, table: sa.Table, add: bool) -> Any:
    """INSERT that adds to (``add``) or replaces the total of an existing (hour, channel)."""
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(table)
        return stmt.on_duplicate_key_update(
            total=table.c.total + stmt.inserted.total if add else stmt.inserted.total)
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(
            index_elements=[table.c.hour, table.c.channel],
            set_={"total": table.c.total + pg.excluded.total if add else pg.excluded.total})
    if dialect == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(
            index_elements=[table.c.hour, table.c.channel],
            set_={"total": table.c.total + lite.excluded.total if add else lite.excluded.total})
    raise NotImplementedError(f"flask-notify-emergency's hourly counts do not support {dialect!r} yet.")


def _hour_expression(dialect: str, column: Any) -> Any:
    if dialect == "sqlite":
        return sa.func.strftime("%Y-%m-%d %H:00:00", column)
    if dialect in ("mysql", "mariadb"):
        return sa.func.date_format(column, "%Y-%m-%d %H:00:00")
    return sa.func.date_trunc("hour", column)


def _as_datetime(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def rebuild(engine: sa.engine.Engine, models: Models, hourly: HourlyCounts,
            progress: Any = None) -> dict[str, Any]:
    """Recount every hour from the notification rows, one day per transaction; then mark ready."""
    if hourly.table is None:
        raise RuntimeError("flask-notify-emergency: this installation has no hourly counts table")
    t, n = hourly.table, models.Notification.__table__
    started = time.perf_counter()
    with engine.begin() as conn:
        if not sa.inspect(conn).has_table(t.name):
            raise RuntimeError(f"table {t.name} does not exist: run db.create_all() or your migrations first.")
        first, last = conn.execute(sa.select(sa.func.min(n.c.created_at), sa.func.max(n.c.created_at))).one()
        conn.execute(t.delete().where(t.c.hour == READY_HOUR, t.c.channel == READY_CHANNEL))
    hourly._present = True
    dialect = engine.dialect.name
    hour = _hour_expression(dialect, n.c.created_at)
    start = hour_of(_as_datetime(first)) if first is not None else hour_of(utcnow())
    with engine.begin() as conn:  # counts of hours without rows any more
        conn.execute(t.delete().where(t.c.hour > READY_HOUR, t.c.hour < start))
    rows_counted = hours = 0
    chunk = dt.timedelta(hours=REBUILD_CHUNK_HOURS)
    while True:
        newest = max(utcnow(), _as_datetime(last) if last is not None else utcnow())
        if start > newest:
            break
        end = start + chunk
        with engine.begin() as conn:
            if dialect == "postgresql":  # writers of these hours wait until this chunk is counted
                conn.execute(sa.text(f"LOCK TABLE {t.name} IN SHARE ROW EXCLUSIVE MODE"))
            conn.execute(t.delete().where(t.c.hour >= start, t.c.hour < end))
            counts = conn.execute(
                sa.select(hour, sa.func.coalesce(n.c.channel, ""), sa.func.count())
                .where(n.c.created_at >= start, n.c.created_at < end).group_by(hour, n.c.channel)).all()
            merged: Counter[Key] = Counter()
            for when, channel, count in counts:
                merged[(hour_of(_as_datetime(when)), str(channel))] += int(count)
            if merged:
                conn.execute(t.insert(), [{"hour": h, "channel": c, "total": v} for (h, c), v in sorted(merged.items())])
        rows_counted += sum(merged.values())
        hours += len({h for h, _ in merged})
        if progress is not None:
            progress(start, rows_counted)
        start = end
    with engine.begin() as conn:
        conn.execute(_upsert(dialect, t, add=False), [{"hour": READY_HOUR, "channel": READY_CHANNEL, "total": 1}])
    return {"rows_counted": rows_counted, "hours": hours, "seconds": round(time.perf_counter() - started, 2)}


class BackgroundRebuild:
    """Runs :func:`rebuild` once in a thread of this process (the dashboard's first use)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def start(self, ext: Any) -> bool:
        """Start it unless it runs here already, or another process holds the lock; True if started."""
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return False
            if not ext.state.acquire_lock("metrics-rebuild", 3600):
                return False

            def run() -> None:
                try:
                    result = rebuild(ext.engine, ext.models, ext.store.hourly)
                    log.info("flask-notify-emergency: hourly counts rebuilt: %s", result)
                except Exception as exc:  # the dashboard keeps counting raw rows; the next view retries
                    log.warning("flask-notify-emergency: rebuilding the hourly counts failed: %s", exc)
                finally:
                    ext.state.release_lock("metrics-rebuild")

            self.thread = threading.Thread(target=run, name="notify-emergency-metrics-rebuild", daemon=True)
            self.thread.start()
            return True

"""Hourly totals: the rollup behind the dashboard's long windows on big tables.

``notify_emergency_hourly`` holds, for every hour, measures of the rows of that hour:

* ``n:<channel>``: how many notifications *created* in the hour are in that channel *now*
  (``n:`` for not delivered yet). A stored row adds 1 to (its hour, its channel); a
  delivered row (acknowledged, flashed, polled, however late) moves 1 from ``n:`` to its
  channel, in its own hour; a deleted row takes 1 away.
* ``e:events``, ``e:open``, ``e:resolved``, ``e:recovered``, and ``e:mttd_us``/``e:mttd_n``,
  ``e:mttr_us``/``e:mttr_n`` (sums of durations in microseconds, and how many) of the
  emergency events *detected* in the hour: opening, resolving and back-dating an event
  change them.

Every change happens in the transaction of the row's own change, as an upsert (``ON
CONFLICT`` / ``ON DUPLICATE KEY``) applied in (hour, measure) order so two transactions
never wait on each other's rows in opposite orders. Durations are summed in whole microseconds, as
the database stores the times, so the totals equal what a scan of the rows computes (up to
SQLite's ``julianday`` resolution, about 0.1 ms, in the scan).

The notification measures are spread over ``SLOTS`` rows per hour (``n:<channel>~<k>``, a
slot picked at random per transaction): every send and every delivery of an hour changes
them, and one row would make all of them queue on its lock until each commits. Readers add
the slots up (and the unslotted rows :func:`rebuild` writes); a slot alone may go below zero.

The totals are only trusted once :func:`rebuild` has counted the rows that were stored
before (it ends by writing the marker row at ``READY_HOUR``); until then the dashboard
reads the raw rows. ``rebuild`` goes one day at a time, each in a short transaction that
keeps concurrent writers out of the hours it recounts (PostgreSQL: a table lock; MariaDB:
the range locks of its DELETE; SQLite: one writer at a time anyway).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections import Counter
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ..models import Models, utcnow

log = logging.getLogger("flask_notify_emergency")

#: The marker row's hour (before any row) and measure; the two measure families.
READY_HOUR = dt.datetime(1970, 1, 1)
READY_MEASURE = "#ready"
NOTIFICATION = "n:"
EVENT = "e:"
#: Hours recounted per transaction by :func:`rebuild`.
REBUILD_CHUNK_HOURS = 24
#: Seconds before a missing table is looked for again (the host may create it meanwhile).
RECHECK_SECONDS = 30.0

Key = tuple[dt.datetime, str]
#: Rows each notification measure of an hour is spread over, and what joins the slot's number.
SLOTS = 16
SLOT = "~"


EPOCH = dt.datetime(1970, 1, 1)


def stored_hour(when: dt.datetime) -> int:
    """The ``hour`` column's value: whole hours since 1970 (an integer compares and reads fast)."""
    return (when - EPOCH) // dt.timedelta(hours=1)


def hour_of(when: dt.datetime) -> dt.datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def channel_key(channel: str | None) -> str:
    return NOTIFICATION + (channel or "")


def unslotted(measure: str) -> str:
    """A stored measure without its slot (``n:realtime~3`` -> ``n:realtime``)."""
    base, sep, slot = measure.rpartition(SLOT)
    return base if sep and slot.isdigit() else measure


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


class HourlyTotals:
    """The rollup table of one app: changes in a writer's transaction, reads, readiness."""

    def __init__(self, engine: sa.engine.Engine, models: Models) -> None:
        self.engine = engine
        self.table: sa.Table | None = models.HourlyTotal.__table__ if models.HourlyTotal else None
        # every stored time keeps microseconds (models.Timestamp); a DATETIME without them
        # (a table created before) would be seen here as whole seconds
        self.whole_seconds = False
        self._present: bool | None = None
        self._checked_at = 0.0
        #: the adding upsert, built once per dialect
        self._upserts: dict[str, Any] = {}

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
        """Add ``deltas`` ((hour, measure) -> +n/-n) in the caller's transaction; the
        notification measures to one slot, picked for this transaction."""
        slot = f"{SLOT}{random.randrange(SLOTS)}"
        slotted: Counter[Key] = Counter()
        for (hour, measure), n in deltas.items():
            if n:
                slotted[(hour, measure + slot if measure.startswith(NOTIFICATION) else measure)] += n
        # in (hour, measure) order: two transactions never wait on each other's rows crosswise
        rows = [{"hour": stored_hour(hour), "measure": measure, "total": n}
                for (hour, measure), n in sorted(slotted.items()) if n]
        if not rows or not self.present(conn):
            return
        assert self.table is not None
        statement = self._upserts.get(conn.dialect.name)
        if statement is None:
            statement = self._upserts[conn.dialect.name] = _upsert(conn.dialect.name, self.table, add=True)
        conn.execute(statement, rows)

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

    def _stored(self, when: dt.datetime) -> dt.datetime:
        return when.replace(microsecond=0) if self.whole_seconds else when

    def event_opened(self, conn: sa.Connection, detected_at: dt.datetime, started_at: dt.datetime | None) -> None:
        hour = hour_of(detected_at)
        deltas: Counter[Key] = Counter({(hour, EVENT + "events"): 1, (hour, EVENT + "open"): 1})
        if started_at is not None:
            deltas[(hour, EVENT + "mttd_us")] += _micros(self._stored(detected_at) - self._stored(started_at))
            deltas[(hour, EVENT + "mttd_n")] += 1
        self.change(conn, deltas)

    def event_resolved(self, conn: sa.Connection, detected_at: dt.datetime, resolved_at: dt.datetime,
                       recovered: bool) -> None:
        hour = hour_of(detected_at)
        self.change(conn, Counter({
            (hour, EVENT + "open"): -1, (hour, EVENT + "resolved"): 1, (hour, EVENT + "recovered"): int(recovered),
            (hour, EVENT + "mttr_us"): _micros(self._stored(resolved_at) - self._stored(detected_at)),
            (hour, EVENT + "mttr_n"): 1}))

    def event_started_at_changed(self, conn: sa.Connection, detected_at: dt.datetime,
                                 old: dt.datetime | None, new: dt.datetime | None) -> None:
        hour = hour_of(detected_at)
        deltas: Counter[Key] = Counter()
        for when, sign in ((old, -1), (new, 1)):
            if when is not None:
                deltas[(hour, EVENT + "mttd_us")] += sign * _micros(self._stored(detected_at) - self._stored(when))
                deltas[(hour, EVENT + "mttd_n")] += sign
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
                    t.c.hour == stored_hour(READY_HOUR), t.c.measure == READY_MEASURE)).first() is not None
        except sa.exc.SQLAlchemyError:
            return False

    def since(self, start: dt.datetime, prefix: str) -> list[tuple[dt.datetime, str, int]]:
        """(hour, measure without ``prefix``, total) of every hour from ``start`` (an hour boundary) on."""
        assert self.table is not None
        t = self.table
        q = sa.select(t.c.hour, t.c.measure, t.c.total).where(
            t.c.hour >= stored_hour(start), t.c.measure.startswith(prefix, autoescape=True), t.c.total != 0)
        hour = dt.timedelta(hours=1)
        summed: Counter[tuple[int, str]] = Counter()
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                summed[(int(r[0]), unslotted(str(r[1]))[len(prefix):])] += int(r[2])
        return [(EPOCH + h * hour, m, v) for (h, m), v in summed.items() if v]

    def buckets(self, start: dt.datetime, bucket_hours: int, prefix: str) -> list[tuple[int, str, int]]:
        """(bucket, measure without ``prefix``, total) of buckets of ``bucket_hours`` from
        ``start`` (an hour boundary) on, summed by the database: a few rows per bucket."""
        return self.buckets_of_families(start, bucket_hours, (prefix,))[prefix]

    def buckets_of_families(self, start: dt.datetime, bucket_hours: int,
                            prefixes: tuple[str, ...]) -> dict[str, list[tuple[int, str, int]]]:
        """:meth:`buckets` of several measure families in one statement: prefix -> its rows."""
        assert self.table is not None
        t = self.table
        offset = (t.c.hour - stored_hour(start)).self_group()
        # DIV on MariaDB; integer / integer is integer division on SQLite and PostgreSQL
        divide = "DIV" if self.engine.dialect.name in ("mysql", "mariadb") else "/"
        bucket = offset.op(divide)(bucket_hours).label("bucket")
        q = (sa.select(bucket, t.c.measure, sa.func.sum(t.c.total))
             .where(t.c.hour >= stored_hour(start), sa.or_(*(sa.and_(*self._family(p)) for p in prefixes)))
             .group_by(bucket, t.c.measure))
        summed: dict[str, Counter[tuple[int, str]]] = {p: Counter() for p in prefixes}
        with self.engine.connect() as conn:
            for b, m, v in conn.execute(q):
                prefix = next((p for p in prefixes if str(m).startswith(p)), None)
                if v and prefix is not None:
                    summed[prefix][(int(b), unslotted(str(m))[len(prefix):])] += int(v)
        return {p: [(b, m, v) for (b, m), v in rows.items() if v] for p, rows in summed.items()}

    def backlog_and_ready(self, notifications: sa.Table) -> tuple[bool, int, Any] | None:
        """(built?, undelivered rows by the totals, created_at of the oldest undelivered row)
        in one statement; None when the table does not exist."""
        if self.table is None:
            return None
        t, n = self.table, notifications
        with self.engine.connect() as conn:
            if not self.present(conn):
                return None
            marker, total, oldest = conn.execute(sa.select(
                sa.select(t.c.total).where(t.c.hour == stored_hour(READY_HOUR), t.c.measure == READY_MEASURE)
                .scalar_subquery(),
                sa.select(sa.func.sum(t.c.total)).where(
                    sa.or_(t.c.measure == NOTIFICATION, t.c.measure.startswith(NOTIFICATION + SLOT, autoescape=True)),
                    t.c.hour > stored_hour(READY_HOUR)).scalar_subquery(),
                # "delivered = false", which every database answers from the (delivered, created_at) index
                sa.select(sa.func.min(n.c.created_at)).where(n.c.delivered == sa.false()).scalar_subquery(),
            )).one()
        return marker is not None, int(total or 0), oldest

    def _family(self, prefix: str) -> list[Any]:
        """``measure`` starts with ``prefix``, as a range the primary key's index can use."""
        assert self.table is not None
        m = self.table.c.measure
        return [m >= prefix, m < prefix[:-1] + chr(ord(prefix[-1]) + 1)]

    def total(self, measure: str) -> int:
        """One measure summed over every hour (through the ``(measure, hour)`` index)."""
        assert self.table is not None
        t = self.table
        q = sa.select(sa.func.sum(t.c.total)).where(
            sa.or_(t.c.measure == measure, t.c.measure.startswith(measure + SLOT, autoescape=True)),
            t.c.hour > stored_hour(READY_HOUR))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def totals_since(self, start: dt.datetime, prefix: str) -> Counter[str]:
        """Each measure (without ``prefix``) summed over every hour from ``start`` on."""
        assert self.table is not None
        t = self.table
        q = (sa.select(t.c.measure, sa.func.sum(t.c.total))
             .where(t.c.hour >= stored_hour(start), *self._family(prefix))
             .group_by(t.c.measure))
        totals: Counter[str] = Counter()
        with self.engine.connect() as conn:
            for m, v in conn.execute(q):
                totals[unslotted(str(m))[len(prefix):]] += int(v or 0)
        return totals

    def invalidate(self) -> None:
        """Distrust the counts until the next :func:`rebuild` (rows were changed behind the store)."""
        if self.table is None:
            return
        t = self.table
        with self.engine.begin() as conn:
            if self.present(conn):
                conn.execute(t.delete().where(t.c.hour == stored_hour(READY_HOUR), t.c.measure == READY_MEASURE))


def _upsert(dialect: str, table: sa.Table, add: bool) -> Any:
    """INSERT that adds to (``add``) or replaces the total of an existing (hour, measure)."""
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(table)
        return stmt.on_duplicate_key_update(
            total=table.c.total + stmt.inserted.total if add else stmt.inserted.total)
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(
            index_elements=[table.c.hour, table.c.measure],
            set_={"total": table.c.total + pg.excluded.total if add else pg.excluded.total})
    if dialect == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(
            index_elements=[table.c.hour, table.c.measure],
            set_={"total": table.c.total + lite.excluded.total if add else lite.excluded.total})
    raise NotImplementedError(f"flask-notify-emergency's hourly totals do not support {dialect!r} yet.")


def _hour_expression(dialect: str, column: Any) -> Any:
    if dialect == "sqlite":
        return sa.func.strftime("%Y-%m-%d %H:00:00", column)
    if dialect in ("mysql", "mariadb"):
        return sa.func.date_format(column, "%Y-%m-%d %H:00:00")
    return sa.func.date_trunc("hour", column)


def _as_datetime(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def _event_deltas(hourly: HourlyTotals, rows: Iterable[Any]) -> Counter[Key]:
    """The ``e:`` measures of stored event rows, as :meth:`HourlyTotals.event_opened` and
    ``event_resolved`` would have added them."""
    deltas: Counter[Key] = Counter()
    for started_at, detected_at, resolved_at, status, recovered in rows:
        detected = _as_datetime(detected_at)
        hour = hour_of(detected)
        deltas[(hour, EVENT + "events")] += 1
        if status == "open":
            deltas[(hour, EVENT + "open")] += 1
        if status == "resolved":
            deltas[(hour, EVENT + "resolved")] += 1
            deltas[(hour, EVENT + "recovered")] += int(bool(recovered))
        if started_at is not None:
            deltas[(hour, EVENT + "mttd_us")] += _micros(detected - _as_datetime(started_at))
            deltas[(hour, EVENT + "mttd_n")] += 1
        if resolved_at is not None:
            deltas[(hour, EVENT + "mttr_us")] += _micros(_as_datetime(resolved_at) - detected)
            deltas[(hour, EVENT + "mttr_n")] += 1
    return deltas


def rebuild(engine: sa.engine.Engine, models: Models, hourly: HourlyTotals) -> dict[str, Any]:
    """Recount every hour from the notification and event rows, a day per transaction; then mark ready."""
    if hourly.table is None:
        raise RuntimeError("flask-notify-emergency: this installation has no hourly totals table")
    t, n, e = hourly.table, models.Notification.__table__, models.EmergencyEvent.__table__
    started = time.perf_counter()
    with engine.begin() as conn:
        if not sa.inspect(conn).has_table(t.name):
            raise RuntimeError(f"table {t.name} does not exist: run db.create_all() or your migrations first.")
        bounds = [*conn.execute(sa.select(sa.func.min(n.c.created_at), sa.func.max(n.c.created_at))).one(),
                  *conn.execute(sa.select(sa.func.min(e.c.detected_at), sa.func.max(e.c.detected_at))).one()]
        conn.execute(t.delete().where(t.c.hour == stored_hour(READY_HOUR), t.c.measure == READY_MEASURE))
    hourly._present = True
    known = [_as_datetime(b) for b in bounds if b is not None]
    dialect = engine.dialect.name
    hour = _hour_expression(dialect, n.c.created_at)
    start = hour_of(min(known)) if known else hour_of(utcnow())
    with engine.begin() as conn:  # totals of hours without rows any more
        conn.execute(t.delete().where(t.c.hour > stored_hour(READY_HOUR), t.c.hour < stored_hour(start)))
    notifications = events = hours = 0
    chunk = dt.timedelta(hours=REBUILD_CHUNK_HOURS)
    while start <= max([utcnow(), *known]):
        end = start + chunk
        with engine.begin() as conn:
            if dialect == "postgresql":  # writers of these hours wait until this chunk is counted
                conn.execute(sa.text(f"LOCK TABLE {t.name} IN SHARE ROW EXCLUSIVE MODE"))
            conn.execute(t.delete().where(t.c.hour >= stored_hour(start), t.c.hour < stored_hour(end)))
            merged: Counter[Key] = Counter()
            for when, channel, count in conn.execute(
                    sa.select(hour, n.c.channel, sa.func.count())
                    .where(n.c.created_at >= start, n.c.created_at < end).group_by(hour, n.c.channel)):
                merged[(hour_of(_as_datetime(when)), channel_key(channel))] += int(count)
                notifications += int(count)
            found = conn.execute(sa.select(e.c.started_at, e.c.detected_at, e.c.resolved_at, e.c.status,
                                           e.c.recovered)
                                 .where(e.c.detected_at >= start, e.c.detected_at < end)).all()
            events += len(found)
            merged.update(_event_deltas(hourly, found))
            rows = [{"hour": stored_hour(h), "measure": m, "total": v} for (h, m), v in sorted(merged.items()) if v]
            if rows:
                conn.execute(t.insert(), rows)
        hours += len({h for h, _ in merged})
        start = end
    with engine.begin() as conn:
        conn.execute(_upsert(dialect, t, add=False), [{"hour": stored_hour(READY_HOUR), "measure": READY_MEASURE, "total": 1}])
    return {"rows_counted": notifications, "events_counted": events, "hours": hours,
            "seconds": round(time.perf_counter() - started, 2)}


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
                    log.info("flask-notify-emergency: hourly totals rebuilt: %s", result)
                except Exception as exc:  # the dashboard keeps counting raw rows; the next view retries
                    log.warning("flask-notify-emergency: rebuilding the hourly totals failed: %s", exc)
                finally:
                    ext.state.release_lock("metrics-rebuild")

            self.thread = threading.Thread(target=run, name="notify-emergency-metrics-rebuild", daemon=True)
            self.thread.start()
            return True

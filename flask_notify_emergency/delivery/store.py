"""The notification store: rows are written before delivery and delivered exactly once.

A fallback (a flash, a poll) *offers* rows: one conditional UPDATE tagged with a random token
sets ``offered_at``/``offered_via`` on rows that are not delivered and not under an offer still
waiting for its confirmation, so two workers or two tabs racing for the same rows each get a
disjoint set. An offered row stays undelivered: only the browser's confirmation that it showed
the row (:meth:`NotificationStore.acknowledge_many`, fed by the ack outbox, the socket and the
ack endpoint) marks it delivered, by the channel that offered it. An offer not confirmed within
``confirm_timeout`` seconds (the reply never reached the browser: a killed worker, a cut
connection, a page that navigated away) lapses, and the row is offered again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
import uuid
from typing import Any, Callable, NamedTuple, TypeVar

import sqlalchemy as sa

from ..models import MAX_ROW_ID, Models, notification_payload, utcnow
from .hourly import NOTIFICATION, HourlyTotals


log = logging.getLogger("flask_notify_emergency")

#: Claiming transactions one claim may run when other claimers keep taking its rows.
CLAIM_ROUNDS = 5
#: Rows per statement of a bulk insert (``send_many``).
INSERT_BATCH = 1000
#: Times one ack or claim transaction is run when the database aborts it for contention.
CONTENTION_ATTEMPTS = 50

#: Rows of the backlog one incremental pending read sweeps (:meth:`NotificationStore.pending_users_changed`).
PENDING_SWEEP_ROWS = 1000
#: Ids re-read behind the newest one seen (a transaction may commit after a later id's).
PENDING_ID_OVERLAP = 2000
#: Seconds of passed real-time deadlines re-read behind the last read (clocks, slow commits).
PENDING_DEADLINE_OVERLAP = 60.0

#: MariaDB/MySQL error codes for "try the transaction again": deadlock, lock wait timeout.
_MYSQL_RETRY_CODES = {1213, 1205}
#: PostgreSQL SQLSTATEs for the same: serialization failure, deadlock detected.
_POSTGRES_RETRY_STATES = {"40001", "40P01"}

T = TypeVar("T")


def is_contention(exc: BaseException) -> bool:
    """True if the database aborted a transaction only because another one raced it
    (a deadlock or a serialization failure), so running it again is correct."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "pgcode", None) in _POSTGRES_RETRY_STATES:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in _MYSQL_RETRY_CODES


def retry_on_contention(transaction: Callable[[], T]) -> T:
    """Run ``transaction`` (one whole transaction), again after a short random pause when the
    database aborted it for a deadlock or serialization failure; other errors pass through."""
    for attempt in range(CONTENTION_ATTEMPTS):
        try:
            return transaction()
        except sa.exc.DBAPIError as exc:
            if not is_contention(exc) or attempt == CONTENTION_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 5)))  # back off, out of step with the others
    raise AssertionError("unreachable")


#: A pooled connection idle longer than this is pinged before use (when the host asks for
#: pre-ping); one in steady use is not: its last statement just showed it alive.
IDLE_PING_SECONDS = 2.0


def steady_engine(engine: sa.engine.Engine, size: int, options: dict[str, Any] | None = None) -> sa.engine.Engine:
    """An engine of the extension's own on ``engine``'s database: ``size`` connections, opened
    once and kept, and no overflow (a busy thread waits for one of them rather than opening,
    handshaking and closing another). ``options`` are the host's engine options (isolation
    level, connect arguments, timeouts), kept but for the pool's size. ``engine`` itself when
    ``size`` is 0 or the database is SQLite (one writer at a time; a memory database is one
    connection's).

    Pre-ping (on unless the host's options turn it off) checks only a connection that sat idle
    for :data:`IDLE_PING_SECONDS`: a connection that went away meanwhile is replaced before
    use, and one in steady use costs no extra round trip per transaction. (A connection that
    breaks while in use fails its statement, and SQLAlchemy then replaces every connection of
    the pool.)

    A connection going back to the pool is not rolled back again: the store reaches the
    database only through SQLAlchemy connections, and a connection ends its own transaction
    before it is returned (its commit, its rollback, or the rollback of its ``close()`` when
    neither came, a failed commit included). The pool's own rollback would be one more round
    trip after every committed transaction.
    """
    if size <= 0 or engine.dialect.name == "sqlite":
        return engine
    settings = dict(options or {})
    for key in ("pool_size", "max_overflow", "poolclass", "pool", "pool_reset_on_return"):
        settings.pop(key, None)
    ping = settings.pop("pool_pre_ping", True)
    settings.setdefault("pool_recycle", 3600)
    own = sa.create_engine(engine.url, pool_size=size, max_overflow=0, pool_reset_on_return=None, **settings)
    if ping:
        sa.event.listen(own, "checkin", _checked_in)
        sa.event.listen(own, "checkout", _ping_if_idle)
    return own


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info["notify_emergency_idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    since = record.info.get("notify_emergency_idle_since")
    if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as exc:  # any failure: the pool replaces this connection and tries again
        raise sa.exc.DisconnectionError(f"an idle pooled connection did not answer: {exc}") from exc


class Acked(NamedTuple):
    """A row an acknowledgement marked delivered: the channel it was counted by, and its
    seconds from creation to delivery."""

    channel: str
    seconds: float


def _inserted_id(result: sa.engine.CursorResult[Any]) -> int:
    """The id of the one row an INSERT just wrote."""
    key = result.inserted_primary_key
    if key is None:  # SQLAlchemy returns None only when no row was inserted
        raise RuntimeError("flask-notify-emergency: the INSERT returned no primary key")
    return int(key[0])


class NotificationStore:
    """Reads and writes notification and banner rows through the host's engine."""

    def __init__(self, engine: sa.engine.Engine, models: Models, confirm_timeout: float = 30.0) -> None:
        #: where :meth:`pending_users_changed` goes on: newest id, time and sweep position read
        self._pending_cursor: dict[str, Any] | None = None
        self.engine = engine
        self.models = models
        #: seconds an offer (a flash, a poll) waits for the browser's confirmation
        self.confirm_timeout = float(confirm_timeout)
        self.table = models.Notification.__table__
        self.banners = models.Banner.__table__
        self.hourly = HourlyTotals(engine, models)
        # the statements of every send and every acknowledgement, built once (with their
        # parameters bound at each run): building one costs more CPU than its round trip
        t = self.table
        self._insert = t.insert()
        self._ack_read = (sa.select(t.c.id, t.c.user_id, t.c.created_at, t.c.channel, t.c.offered_via)
                          .where(t.c.id.in_(sa.bindparam("ids", expanding=True)), t.c.delivered == sa.false())
                          .order_by(t.c.id).with_for_update())
        marked = {"delivered": True, "delivered_at": sa.bindparam("at"), "channel": sa.bindparam("shown_by"),
                  "claim_token": sa.bindparam("token"), "attempts": t.c.attempts + sa.bindparam("more")}
        unmarked = [t.c.id.in_(sa.bindparam("ids", expanding=True)), t.c.delivered == sa.false()]
        #: the acknowledging UPDATE of rows nobody offered, and of rows one channel offered
        self._ack_unoffered = t.update().where(*unmarked, t.c.offered_via.is_(None)).values(**marked)
        self._ack_offered = t.update().where(*unmarked, t.c.offered_via == sa.bindparam("via")).values(**marked)
        self._ack_marked = sa.select(t.c.id).where(t.c.id.in_(sa.bindparam("ids", expanding=True)),
                                                   t.c.claim_token == sa.bindparam("token"))

    def create(self, values: dict[str, Any]) -> int:
        """Insert one notification row and commit it; return its id."""
        values = dict(values, created_at=values.get("created_at") or utcnow())
        with self.engine.begin() as conn:
            # one cached statement with parameters (not a statement built from the values)
            result = conn.execute(self._insert, values)
            self.hourly.added(conn, [values])
        return _inserted_id(result)

    def create_many(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert many notification rows in one transaction; their ids, in the order given.

        Multi-row INSERTs with RETURNING where the database has it (SQLite 3.35+, MariaDB
        10.5+, PostgreSQL), else one INSERT per row; one commit either way.
        """
        if not rows:
            return []
        ids: list[int] = []
        now = utcnow()
        rows = [row if row.get("created_at") else dict(row, created_at=now) for row in rows]
        with self.engine.begin() as conn:
            if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
                stmt = self.table.insert().returning(self.table.c.id, sort_by_parameter_order=True)
                for start in range(0, len(rows), INSERT_BATCH):
                    ids += [int(r[0]) for r in conn.execute(stmt, rows[start:start + INSERT_BATCH])]
            else:
                ids = [_inserted_id(conn.execute(self.table.insert().values(**row))) for row in rows]
            self.hourly.added(conn, rows)
        return ids

    def _claimable(self, now: dt.datetime) -> list[Any]:
        """The conditions of rows a fallback may offer now: undelivered, not awaiting a
        real-time ack, not expired, and not under an offer whose confirmation may still come."""
        t = self.table
        lapsed = now - dt.timedelta(seconds=self.confirm_timeout)
        return [t.c.delivered == sa.false(),
                sa.or_(t.c.realtime_deadline.is_(None), t.c.realtime_deadline < now),
                sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now),
                sa.or_(t.c.offered_at.is_(None), t.c.offered_at < lapsed)]

    def claim(self, user_id: str, limit: int, channel: str,
              exclude: set[int] | None = None) -> list[dict[str, Any]]:
        """Atomically offer up to ``limit`` claimable rows of a user by ``channel``.

        The rows stay undelivered until the browser confirms them (:meth:`acknowledge_many`);
        unconfirmed, they are claimable again after ``confirm_timeout``. Rows another claimer
        took between our SELECT and UPDATE are skipped; we then look again, so a poll racing
        another tab still gets what is waiting instead of nothing. ``exclude``: ids not to
        offer (a flash of them already waits in the session).
        """
        claimed: list[dict[str, Any]] = []
        unsendable: set[int] = set(exclude or ())
        for _ in range(CLAIM_ROUNDS):
            selected, rows, bad = retry_on_contention(
                lambda: self._claim_once(user_id, limit - len(claimed), channel, unsendable))
            claimed += rows
            unsendable |= bad
            if (len(rows) == selected and not bad) or len(claimed) >= limit:
                break  # nobody raced us (or the batch is full): what is left is not claimable
        return claimed

    def _claim_once(self, user_id: str, limit: int, channel: str,
                    unsendable: set[int]) -> tuple[int, list[dict[str, Any]], set[int]]:
        """One claiming transaction: (rows selected, rows this call offered, ids of rows left
        alone because their payload cannot be sent as JSON).

        Each payload is built and serialised *before* its row is offered, so a row the reply
        could not carry is never offered: it stays pending, logged.
        """
        t = self.table
        now = utcnow()
        token = uuid.uuid4().hex
        claimable = self._claimable(now)
        mine = sa.and_(t.c.user_id == user_id, *claimable)
        if unsendable:
            mine = sa.and_(mine, t.c.id.not_in(unsendable))
        # The candidates are read outside the claiming transaction, which then touches rows by
        # primary key only: on SERIALIZABLE a range read inside it would conflict with every
        # ack of that user's rows, and on MariaDB it would take gap locks. The read itself is
        # only a list of candidates, so READ COMMITTED is enough for it on any host setting.
        with self.engine.connect() as conn:
            if self.engine.dialect.name != "sqlite":
                conn = conn.execution_options(isolation_level="READ COMMITTED")
            candidates = conn.execute(sa.select(t).where(mine).order_by(t.c.id).limit(limit)).all()
        payloads: dict[int, dict[str, Any]] = {}
        bad: set[int] = set()
        for row in candidates:
            payload = dict(notification_payload(row), user_id=row.user_id)
            try:
                json.dumps(payload, allow_nan=False)
            except (TypeError, ValueError) as exc:
                log.error("flask-notify-emergency: notification %s cannot be sent as JSON (%s); "
                          "it stays undelivered", row.id, exc)
                bad.add(int(row.id))
                continue
            payloads[int(row.id)] = payload
        if not payloads:
            return 0, [], bad
        ids = sorted(payloads)
        with self.engine.begin() as conn:
            # the same conditions again, on the rows' current versions: a row another claimer
            # offered (or a browser confirmed) since our read is left alone
            conn.execute(
                t.update()
                .where(t.c.id.in_(ids), *claimable)
                .values(offered_at=now, offered_via=channel, claim_token=token)
            )
            taken = conn.execute(sa.select(t.c.id).where(t.c.id.in_(ids), t.c.claim_token == token)
                                 .order_by(t.c.id)).scalars().all()
        return len(ids), [payloads[int(nid)] for nid in taken], bad

    def acknowledge(self, notification_id: int, user_id: str, channel: str | None = "realtime") -> bool:
        """Mark one row delivered if it is the user's and not yet delivered; True if we did.
        ``channel``: see :meth:`acknowledge_many`."""
        return bool(self.acknowledge_many([(notification_id, user_id)], channel))

    def acknowledge_many(self, acks: list[tuple[int, str]],
                         channel: str | None = None) -> dict[int, Acked]:
        """The browser showed these rows: mark delivered each ``(id, user)`` whose row is that
        user's and not delivered yet, in one transaction (another only for rows a claim
        offered meanwhile); for each row this call marked, the channel it was counted by and
        its seconds from creation to delivery (the acknowledgement latency, read with the row).

        The channel counted is ``channel`` when given, else the one that offered the row
        (``offered_via``: a flash, a poll), else ``realtime`` (it came over the socket). A row
        a fallback showed counts one more delivery attempt (see :mod:`.stats`).

        The rows are read by primary key with a locking read (``FOR UPDATE``; SQLite has one
        writer at a time) and updated by primary key alone: with ``user_id`` in a WHERE,
        MariaDB may go through the ``(user_id, delivered, id)`` index and take gap locks that
        deadlock two acks. Each UPDATE is conditional on what the read saw and tags its rows
        with a token, so what this reports is exactly what it changed; a row a claim offered
        between the read and the UPDATE (possible on SQLite) is read again, never dropped.
        """
        wanted: dict[int, str] = {}
        for nid, uid in acks:
            if 0 < int(nid) <= MAX_ROW_ID:
                wanted.setdefault(int(nid), str(uid))
        marked: dict[int, Acked] = {}
        for _ in range(CLAIM_ROUNDS):
            if not wanted:
                return marked
            todo = wanted
            got, again = retry_on_contention(lambda: self._acknowledge_once(todo, channel))
            marked.update(got)
            wanted = {nid: todo[nid] for nid in again}
        if wanted:  # offered anew every round: still undelivered, the next confirmation marks them
            log.warning("flask-notify-emergency: acknowledgements of %d row(s) kept racing claims",
                        len(wanted))
        return marked

    def _acknowledge_once(self, wanted: dict[int, str],
                          channel: str | None) -> tuple[dict[int, Acked], list[int]]:
        """One transaction: (the rows it marked, ids to read again because a claim offered them
        between this read and this UPDATE)."""
        marked: dict[int, Acked] = {}
        again: list[int] = []
        with self.engine.begin() as conn:
            # created_at never changes, and an undelivered row's channel changes only with
            # ``delivered``: what this reads is what the UPDATE below changes, if it does
            found = [r for r in conn.execute(self._ack_read, {"ids": sorted(wanted)})
                     if str(r.user_id) == wanted[int(r.id)]]
            if not found:
                return marked, again
            # one UPDATE per offering channel read (one, nearly always), conditional on it, so
            # the channel counted is the one the row has when it is marked
            groups: dict[str | None, list[Any]] = {}
            for row in found:
                groups.setdefault(row.offered_via, []).append(row)
            token = uuid.uuid4().hex
            now = utcnow()
            moved = []
            for via, rows in sorted(groups.items(), key=lambda g: g[0] or ""):
                shown_by = channel or via or "realtime"
                group = sorted(int(r.id) for r in rows)
                values = {"ids": group, "at": now, "shown_by": shown_by, "token": token,
                          "more": 0 if shown_by == "realtime" else 1}
                if via is None:
                    result = conn.execute(self._ack_unoffered, values)
                else:
                    result = conn.execute(self._ack_offered, dict(values, via=via))
                done = group
                if int(result.rowcount or 0) != len(group):
                    # some were confirmed elsewhere (gone) or offered anew (read again) meanwhile
                    marked_now = conn.execute(self._ack_marked, {"ids": group, "token": token}).scalars()
                    done = sorted(int(i) for i in marked_now)
                    again += sorted(set(group) - set(done))
                before = {int(r.id): r for r in rows}
                for nid in done:
                    row = before[nid]
                    marked[nid] = Acked(shown_by, max(0.0, (now - row.created_at).total_seconds()))
                    moved.append((row.created_at, row.channel, shown_by))
            if moved:
                self.hourly.moved(conn, moved)
        return marked, again

    def undelivered(self, ids: list[int]) -> list[int]:
        """Those of these ids whose rows exist and are not delivered (one read, by primary key)."""
        if not ids:
            return []
        t = self.table
        found: list[int] = []
        with self.engine.connect() as conn:
            for start in range(0, len(ids), INSERT_BATCH):
                chunk = ids[start:start + INSERT_BATCH]
                found += [int(r[0]) for r in conn.execute(
                    sa.select(t.c.id).where(t.c.id.in_(chunk), t.c.delivered == sa.false()))]
        return found

    def delete_expired(self, ids: list[int]) -> int:
        """Delete those of these rows that are undelivered and past ``expires_at``; how many."""
        if not ids:
            return 0
        t = self.table
        now = utcnow()
        gone = sa.and_(t.c.id.in_(ids), t.c.delivered == sa.false(), t.c.expires_at.is_not(None),
                       t.c.expires_at <= now)
        deleted = 0
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(t.c.id, t.c.created_at, t.c.channel).where(gone)).all()
            # one DELETE per (hour, channel), so each one's row count says what left that hour
            groups: dict[tuple[Any, Any], list[int]] = {}
            for nid, created_at, channel in found:
                groups.setdefault((created_at.replace(minute=0, second=0, microsecond=0), channel), []).append(nid)
            for (hour, channel), group in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1] or "")):
                count = int(conn.execute(t.delete().where(gone, t.c.id.in_(group))).rowcount or 0)
                self.hourly.removed(conn, [(hour, channel)] * count)
                deleted += count
        return deleted

    def unclaim(self, ids: list[int], user_id: str, channel: str) -> int:
        """Withdraw offers ``channel`` made for a response that will not show them: the rows
        are claimable again at once; only the user's own, undelivered rows that channel
        offered. Returns how many."""
        if not ids:
            return 0
        t = self.table
        taken = sa.and_(t.c.id.in_(ids), t.c.user_id == user_id, t.c.delivered == sa.false(),
                        t.c.offered_via == channel)

        def unclaim_once() -> int:
            with self.engine.begin() as conn:
                return int(conn.execute(
                    t.update().where(taken)
                    .values(offered_at=None, offered_via=None, claim_token=None, realtime_deadline=None)
                ).rowcount or 0)

        return retry_on_contention(unclaim_once)

    def release_realtime(self, ids: list[int]) -> list[tuple[int, str]]:
        """Hand rows whose ack never came to the fallbacks; return (id, user) still undelivered."""
        if not ids:
            return []
        t = self.table

        def release() -> list[tuple[int, str]]:
            with self.engine.begin() as conn:
                conn.execute(t.update().where(t.c.id.in_(ids), t.c.delivered == sa.false())
                             .values(realtime_deadline=None))
                rows = conn.execute(sa.select(t.c.id, t.c.user_id)
                                    .where(t.c.id.in_(ids), t.c.delivered == sa.false())).all()
            return [(int(r[0]), str(r[1])) for r in rows]

        return retry_on_contention(release)

    def pending_user_ids(self) -> set[str]:
        """Users with at least one claimable undelivered notification, a lapsed offer too
        (reads the whole backlog)."""
        t = self.table
        q = sa.select(t.c.user_id).where(*self._claimable(utcnow())).distinct()
        with self.engine.connect() as conn:
            return {str(r[0]) for r in conn.execute(q)}

    def lapsed_offer_users(self) -> set[str]:
        """Users with an offer the browser did not confirm in time (its reply was lost): the
        row is claimable again, and its user must be marked as having pending rows."""
        t = self.table
        now = utcnow()
        lapsed = now - dt.timedelta(seconds=self.confirm_timeout)
        q = sa.select(t.c.user_id).where(
            t.c.delivered == sa.false(), t.c.offered_at.is_not(None), t.c.offered_at < lapsed,
            sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now),
        ).distinct().limit(10_000)
        with self.engine.connect() as conn:
            return {str(r[0]) for r in conn.execute(q)}

    def pending_users_changed(self, sweep_rows: int = PENDING_SWEEP_ROWS,
                              id_overlap: int = PENDING_ID_OVERLAP) -> set[str]:
        """Users who may have become pending since the last call; everyone pending on the first.

        After the first (whole) read, a call reads only: rows stored since (ids after the newest
        seen, with an overlap), rows whose real-time deadline passed since (the
        ``(delivered, realtime_deadline)`` index), and the next ``PENDING_SWEEP_ROWS`` rows of
        a sweep over the backlog in creation order (the ``(delivered, created_at)`` index),
        which finds anything else (a row unclaimed or restored by another process) within one
        pass. Its cost is bounded by those, not by the backlog, which at 10,000,000 rows
        holds hundreds of thousands of waiting rows."""
        t = self.table
        now = utcnow()
        cursor = self._pending_cursor
        with self.engine.connect() as conn:
            top = int(conn.execute(sa.select(sa.func.max(t.c.id))).scalar() or 0)
            if cursor is None:
                users = {str(r[0]) for r in conn.execute(
                    sa.select(t.c.user_id).where(*self._claimable(now)).distinct())}
                self._pending_cursor = {"id": top, "at": now, "sweep": None}
                return users
            claimable = self._claimable(now)
            users = {str(r[0]) for r in conn.execute(sa.select(t.c.user_id).where(
                t.c.id > cursor["id"] - id_overlap, t.c.id <= top, *claimable).distinct())}
            passed = cursor["at"] - dt.timedelta(seconds=PENDING_DEADLINE_OVERLAP)
            users.update(str(r[0]) for r in conn.execute(sa.select(t.c.user_id).where(
                t.c.delivered == sa.false(), t.c.realtime_deadline >= passed, t.c.realtime_deadline < now,
                *claimable).distinct()))
            sweep = cursor["sweep"]
            q = sa.select(t.c.user_id, t.c.created_at).where(*claimable)
            page = conn.execute((q.where(t.c.created_at > sweep) if sweep is not None else q)
                                .order_by(t.c.created_at).limit(sweep_rows)).all()
            users.update(str(r[0]) for r in page)
            if len(page) < sweep_rows:
                sweep = None  # the pass is complete; the next call starts again from the oldest
            else:
                sweep = page[-1][1]  # the rest of that instant too, so the next page may start after it
                users.update(str(r[0]) for r in conn.execute(
                    sa.select(t.c.user_id).where(t.c.created_at == sweep, *claimable).distinct()))
        self._pending_cursor = {"id": max(top, cursor["id"]), "at": now, "sweep": sweep}
        return users

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
        """(count of undelivered rows, created_at of the oldest).

        The oldest is the first entry of the ``(delivered, created_at)`` index; the count comes
        from the hourly totals when they are built (every hour's ``n:``), else from a ``COUNT``
        over that index, which at 10,000,000 rows reads hundreds of thousands of entries."""
        t = self.table
        undelivered = t.c.delivered == sa.false()
        if self.hourly.ready():
            with self.engine.connect() as conn:
                oldest = conn.execute(sa.select(sa.func.min(t.c.created_at)).where(undelivered)).scalar()
            return self.hourly.total(NOTIFICATION), oldest
        with self.engine.connect() as conn:
            count, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(t.c.created_at)).where(undelivered)).one()
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
        if banner_id is not None and not 0 < banner_id <= MAX_ROW_ID:
            return 0  # no row has it (and the database would refuse the number)
        if banner_id is not None:
            cond.append(b.c.id == banner_id)
        if kind is not None:
            cond.append(b.c.kind == kind)
        with self.engine.begin() as conn:
            result = conn.execute(b.update().where(*cond).values(dismissed_at=utcnow(), dismissed_by=actor))
        return int(result.rowcount or 0)


def banner_payload(row: Any) -> dict[str, Any]:
    """A banner as everyone may see it (pages, ``api/banners``, polls, socket pushes): what it
    says and when, never who posted it (the dashboard adds that for admins)."""
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() + "Z" if v else None

    return {
        "id": row.id, "title": row.title, "message": row.message, "level": row.level,
        "kind": row.kind, "created_at": iso(row.created_at),
        "starts_at": iso(row.starts_at), "ends_at": iso(row.ends_at),
    }

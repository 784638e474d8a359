"""Benchmarks of the admin dashboard's overview JSON on large stores.

``GET <prefix>/api/overview?window=W`` through the full request path (login session, admin
check, every metric, JSON), p95 of many requests, for every window W (1h, 24h, 7d, 30d):

* quick and full run, SQLite, 1,000,000 notifications and 100,000 events:
  ``dashboard_api_p95_ms`` (24 h), ``dashboard_api_p95_ms_1h``, ``dashboard_api_p95_ms_7d``,
  ``dashboard_api_p95_ms_30d``. Target: at most 100 ms each.
* full run only, 10,000,000 notifications and 100,000 events: the same keys ending ``_10m``
  (SQLite), ``_mariadb`` (127.0.0.1:3306) and ``_postgres`` (127.0.0.1:5432). These stores
  are kept between runs (``KEPT_DATABASE`` on the servers, a file under ``bench/.data/``) and
  brought to now before measuring (``_bring_to_now``); ``BENCH_DASHBOARD_FRESH=1`` builds
  them again.

Beside each p95: its p50, ``…_cpu_p50`` (this process's CPU time per request) and
``…_statements`` (SQL statements per request). ``python -m bench.dashboard trace <kind>``
prints every statement of one request per window with its time and the slow ones' plans.

The rows are spread evenly over the last 35 days (so a 30 d window holds 6/7 of them):
70% delivered over the socket, 20% by flash, 8% by poll, 2% still waiting. They are written
by one ``INSERT ... SELECT`` over a number sequence in the database itself (a recursive CTE
on SQLite, ``seq_0_to_N`` on MariaDB, ``generate_series`` on PostgreSQL), as an existing
store would hold them, and then counted into the hourly totals by ``rebuild-metrics``
(timed: ``<key>_rebuild_s``). ``--quick`` uses fewer requests and the SQLite dataset built
once under ``bench/.data/`` (its times and its hourly totals shifted by whole hours to end
within the last hour).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import statistics
import time
import uuid
from typing import Any, Callable

import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_notify_emergency import NotifyEmergency
from flask_notify_emergency.delivery.hourly import _event_deltas
from flask_notify_emergency.detect.schema import add_column_sql
from flask_notify_emergency.models import utcnow

from .timing import Options, progress

TARGET_MS = 100.0
NOTIFICATIONS = 1_000_000
FULL_NOTIFICATIONS = 10_000_000
EVENTS = 100_000
SPAN_SECONDS = 35 * 86400
WINDOWS = ("1h", "24h", "7d", "30d")
USERS = 5000
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".data")
#: Bumped whenever the schema or the rows change, so ``--quick`` never measures a stale store.
DATASET_VERSION = 4
MARIADB_SERVER = os.environ.get("BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")
#: The state backend of the measured app: Redis when one answers here (``BENCH_REDIS_URL``),
#: else the memory backend, whose periodic refresh reads every waiting row's user.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: The 10M stores are kept between runs (a fill takes minutes): this database on MariaDB and
#: PostgreSQL, ``bench/.data/dashboard-10m-<version>.sqlite`` for SQLite. Drop it (or set
#: ``BENCH_DASHBOARD_FRESH=1``) to build a new one.
KEPT_DATABASE = f"ne_bench_10m_v{DATASET_VERSION}"
FRESH = os.environ.get("BENCH_DASHBOARD_FRESH") == "1"


def _redis_answers() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except Exception:  # no Redis here: the memory backend, and the report says so
        return False


def _forget_redis_keys(app: Flask) -> None:
    prefix = app.config.get("NOTIFY_EMERGENCY_REDIS_KEY_PREFIX")
    if app.config.get("NOTIFY_EMERGENCY_STATE_BACKEND") != "redis" or not prefix:
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def build_app(database_uri: str, instance: str) -> tuple[Flask, Any]:
    """A host app on ``database_uri`` with one admin; returns (app, a logged-in admin client)."""
    app = Flask(f"bench_dashboard_{uuid.uuid4().hex[:8]}", instance_path=instance)
    app.config.update(SECRET_KEY="bench-secret", SQLALCHEMY_DATABASE_URI=database_uri,
                      NOTIFY_EMERGENCY_MONITOR_ENABLED=False)
    if _redis_answers():  # as a deployment of many workers runs: shared state in Redis
        app.config.update(NOTIFY_EMERGENCY_STATE_BACKEND="redis", NOTIFY_EMERGENCY_REDIS_URL=REDIS_URL,
                          NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=f"ne-bench-{uuid.uuid4().hex[:8]}")

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(app, model_class=Base)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "bench_dashboard_user"
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True, nullable=False)
        is_admin = db.Column(db.Boolean, nullable=False, default=False)

    login_manager = LoginManager(app)
    login_manager.user_loader(lambda uid: db.session.get(User, int(uid)) if uid.isdigit() else None)
    socketio = SocketIO(app, async_mode="threading")
    NotifyEmergency(app, db=db, socketio=socketio)

    @app.post("/bench-login")
    def bench_login() -> Any:
        from flask_login import login_user

        login_user(User.query.filter_by(username="admin").one())
        return "", 204

    with app.app_context():
        db.create_all()
        if User.query.filter_by(username="admin").first() is None:
            db.session.add(User(username="admin", is_admin=True))
            db.session.commit()
    client = app.test_client()
    client.post("/bench-login")
    app.extensions["bench_db"] = db
    return app, client


# -- filling the store, in the database (INSERT ... SELECT over a number sequence) ----------
# notification i: user i % USERS, created SPAN * i / n seconds before now; every 50th still
# waiting, else 70% realtime, 20% flash, 10% poll. Event i likewise over the same span.
CHANNEL_SQL = ("CASE WHEN {i} % 50 = 0 THEN NULL WHEN {i} % 10 < 7 THEN 'realtime' WHEN {i} % 10 < 9 THEN 'flash' "
               "ELSE 'poll' END")


def _fill_sqlite(engine: sa.engine.Engine, now: dt.datetime, notifications: int,
                 rows: range | None = None, events: range | None = None) -> None:
    rows = range(notifications) if rows is None else rows
    events = range(EVENTS) if events is None else events
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    when = f"strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || (i * {SPAN_SECONDS} / :n) || ' seconds') || '.000000'"
    seq = "WITH RECURSIVE seq(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM seq WHERE i < :stop - 1)"
    with engine.begin() as conn:
        if len(rows):
            conn.execute(sa.text(f"""
                {seq}
                INSERT INTO notify_emergency_notification (user_id, audience, title, message, priority, category,
                    created_at, delivered, delivered_at, channel, attempts)
                SELECT CAST(i % {USERS} AS TEXT), 'user', 'Bench notification ' || i, 'A message.', 'normal',
                    'system', {when}, i % 50 <> 0, CASE WHEN i % 50 <> 0 THEN {when} END,
                    {CHANNEL_SQL.format(i="i")}, 1
                FROM seq"""), {"n": notifications, "first": rows.start, "stop": rows.stop})
        if len(events):
            conn.execute(sa.text(f"""
                {seq}
                INSERT INTO notify_emergency_event (level, failure_type, status, reason, affected_users,
                    started_at, detected_at, resolved_at, actions, manual_intervention, recovered)
                SELECT i % 4 + 1, 'manual', 'resolved', 'bench event ' || i, 0,
                    strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || (i * {SPAN_SECONDS} / :n + 60) || ' seconds') || '.000000',
                    strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || (i * {SPAN_SECONDS} / :n) || ' seconds') || '.000000',
                    strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || (i * {SPAN_SECONDS} / :n - 600) || ' seconds') || '.000000',
                    '[]', 0, i % 5 <> 0
                FROM seq"""), {"n": EVENTS, "first": events.start, "stop": events.stop})


def _fill_mariadb(engine: sa.engine.Engine, now: dt.datetime, notifications: int,
                  rows: range | None = None, events: range | None = None) -> None:
    rows = range(notifications) if rows is None else rows
    events = range(EVENTS) if events is None else events
    when = f"TIMESTAMPADD(SECOND, -FLOOR(seq * {SPAN_SECONDS} / :n), :now)"
    with engine.connect() as conn:
        for start in range(rows.start, rows.stop, 1_000_000):  # one statement per million: the undo log stays small
            conn.execute(sa.text(f"""
                INSERT INTO notify_emergency_notification (user_id, audience, title, message, priority, category,
                    created_at, delivered, delivered_at, channel, attempts)
                SELECT CAST(seq % {USERS} AS CHAR), 'user', CONCAT('Bench notification ', seq), 'A message.',
                    'normal', 'system', {when}, seq % 50 <> 0, IF(seq % 50 <> 0, {when}, NULL),
                    {CHANNEL_SQL.format(i="seq")}, 1
                FROM seq_{start}_to_{min(start + 1_000_000, rows.stop) - 1}"""),
                {"n": notifications, "now": now})
            conn.commit()
        if len(events):
            conn.execute(sa.text(f"""
                INSERT INTO notify_emergency_event (level, failure_type, status, reason, affected_users,
                    started_at, detected_at, resolved_at, actions, manual_intervention, recovered)
                SELECT seq % 4 + 1, 'manual', 'resolved', CONCAT('bench event ', seq), 0,
                    TIMESTAMPADD(SECOND, -FLOOR(seq * {SPAN_SECONDS} / :n) - 60, :now), {when},
                    TIMESTAMPADD(SECOND, -FLOOR(seq * {SPAN_SECONDS} / :n) + 600, :now), '[]', 0, seq % 5 <> 0
                FROM seq_{events.start}_to_{events.stop - 1}"""), {"n": EVENTS, "now": now})
            conn.commit()
        if len(rows) == notifications:  # as InnoDB's own statistics would be after the load
            conn.execute(sa.text("ANALYZE TABLE notify_emergency_notification, notify_emergency_event"))
            conn.commit()


def _fill_postgres(engine: sa.engine.Engine, now: dt.datetime, notifications: int,
                   rows: range | None = None, events: range | None = None) -> None:
    rows = range(notifications) if rows is None else rows
    events = range(EVENTS) if events is None else events
    when = f"CAST(:now AS timestamp) - make_interval(secs => floor(i::float8 * {SPAN_SECONDS} / :n))"
    with engine.connect() as conn:
        for start in range(rows.start, rows.stop, 1_000_000):
            conn.execute(sa.text(f"""
                INSERT INTO notify_emergency_notification (user_id, audience, title, message, priority, category,
                    created_at, delivered, delivered_at, channel, attempts)
                SELECT (i % {USERS})::text, 'user', 'Bench notification ' || i, 'A message.', 'normal', 'system',
                    {when}, i % 50 <> 0, CASE WHEN i % 50 <> 0 THEN {when} END, {CHANNEL_SQL.format(i="i")}, 1
                FROM generate_series(:start, :stop) AS i"""),
                {"n": notifications, "now": now, "start": start, "stop": min(start + 1_000_000, rows.stop) - 1})
            conn.commit()
        if len(events):
            conn.execute(sa.text(f"""
                INSERT INTO notify_emergency_event (level, failure_type, status, reason, affected_users,
                    started_at, detected_at, resolved_at, actions, manual_intervention, recovered)
                SELECT i % 4 + 1, 'manual', 'resolved', 'bench event ' || i, 0,
                    {when} - interval '60 seconds', {when}, {when} + interval '600 seconds', '[]', false, i % 5 <> 0
                FROM generate_series(:start, :stop) AS i"""),
                {"n": EVENTS, "now": now, "start": events.start, "stop": events.stop - 1})
            conn.commit()
    # what autovacuum does after a bulk load: statistics for the planner, and the visibility
    # map, without which an index-only scan still reads every row's page (VACUUM needs autocommit)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE notify_emergency_notification"))
        conn.execute(sa.text("VACUUM ANALYZE notify_emergency_event"))


def _count(engine: sa.engine.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def _shift_sqlite_to_now(engine: sa.engine.Engine) -> None:
    """Move a stored dataset's times by whole hours so its newest notification is in the last
    hour, and its hourly totals with them (no recount needed)."""
    with engine.connect() as conn:
        newest = conn.execute(sa.text("SELECT MAX(created_at) FROM notify_emergency_notification")).scalar_one()
    hours = int((utcnow() - dt.datetime.fromisoformat(str(newest))).total_seconds()) // 3600
    if hours < 1:
        return
    lag = hours * 3600
    progress(f"  shifting the stored dataset by {hours} h to end now")
    shift = "strftime('%Y-%m-%d %H:%M:%S', {col}, '+{lag} seconds') || '.000000'"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notify_emergency_notification SET created_at = "
                             + shift.format(col="created_at", lag=lag) + ", delivered_at = CASE WHEN delivered_at "
                             "IS NULL THEN NULL ELSE " + shift.format(col="delivered_at", lag=lag) + " END"))
        conn.execute(sa.text("UPDATE notify_emergency_event SET "
                             + ", ".join(f"{c} = " + shift.format(col=c, lag=lag)
                                         for c in ("started_at", "detected_at", "resolved_at"))))
        # two passes, so no (hour, measure) meets one not moved yet
        conn.execute(sa.text("UPDATE notify_emergency_hourly SET hour = -(hour + :h) WHERE hour > 0"), {"h": hours})
        conn.execute(sa.text("UPDATE notify_emergency_hourly SET hour = -hour WHERE hour < 0"))


# -- measuring ---------------------------------------------------------------------------
def measure(client: Any, window: str, requests: int, engine: sa.engine.Engine | None = None
            ) -> tuple[list[float], list[float], int]:
    """Milliseconds of each of ``requests`` overview requests (after three warm-ups), the CPU
    milliseconds this process spent on each, and the SQL statements of the last one."""
    url = f"/emergency/api/overview?window={window}"
    for _ in range(3):
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
    expected = "rows" if window == "1h" else "hourly totals"
    if response.get_json()["delivery"]["source"] != expected:
        raise RuntimeError(f"the {window} window counted {response.get_json()['delivery']['source']}, not {expected}")
    times, cpu = [], []
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    for i in range(requests):
        last = i == requests - 1
        if last and engine is not None:
            sa.event.listen(engine, "before_cursor_execute", count)
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        if last and engine is not None:
            sa.event.remove(engine, "before_cursor_execute", count)
        assert response.status_code == 200
    return times, cpu, statements[0]


def p95(times: list[float]) -> float:
    return round(statistics.quantiles(times, n=20)[-1], 1)


def window_key(key: str, window: str, suffix: str) -> str:
    return f"{key}{suffix}" if window == "24h" else f"{key}_{window}{suffix}"


def report(client: Any, options: Options, suffix: str, extra: dict[str, Any],
           engine: sa.engine.Engine | None = None) -> dict[str, Any]:
    """p95 (and p50) of every window; keys ``dashboard_api_p95_ms[_<window>]<suffix>``; beside
    them ``…_cpu_p50`` (this process's CPU time per request: what the load of other work on the
    machine does not inflate) and ``…_statements`` (SQL statements per request)."""
    result: dict[str, Any] = {"targets": {}, **extra}
    for window in WINDOWS:
        times, cpu, statements = measure(client, window, options.pick(30, 200), engine)
        key = window_key("dashboard_api_p95_ms", window, suffix)
        result[key] = p95(times)
        result[f"{key}_p50"] = round(statistics.median(times), 1)
        result[f"{key}_cpu_p50"] = round(statistics.median(cpu), 1)
        result[f"{key}_statements"] = statements
        result["targets"][key] = TARGET_MS
        progress(f"  {window}: p50 {statistics.median(times):.1f} ms, p95 {p95(times)} ms, CPU p50 "
                 f"{statistics.median(cpu):.1f} ms, {statements} statements; load {os.getloadavg()[0]:.1f}")
    return result


def _rebuild(ext: Any) -> float:
    from flask_notify_emergency.delivery.hourly import rebuild

    start = time.perf_counter()
    result = rebuild(ext.engine, ext.models, ext.store.hourly)
    progress(f"  hourly totals rebuilt: {result['rows_counted']} rows in {result['seconds']} s")
    return round(time.perf_counter() - start, 1)


Fill = Callable[..., None]


def _bring_to_now(ext: Any, fill: Fill, notifications: int) -> int:
    """Move a kept store's window to now: add the rows and events of the time since its newest
    (the same pattern, so the new hours look like the old ones), delete those that fell out of
    the 35 days, and change the hourly totals as the store would have, in one transaction
    (so the totals stay equal to a recount). Returns the rows added."""
    n, e = ext.models.Notification.__table__, ext.models.EmergencyEvent.__table__
    engine, totals = ext.engine, ext.store.hourly
    now = utcnow().replace(microsecond=0)
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(n.c.created_at))).scalar_one()
        newest_event = conn.execute(sa.select(sa.func.max(e.c.detected_at))).scalar_one()
    rows = max(0, math.ceil((now - newest).total_seconds() * notifications / SPAN_SECONDS))
    events = max(0, math.ceil((now - newest_event).total_seconds() * EVENTS / SPAN_SECONDS))
    if rows < 100:
        return 0
    progress(f"  bringing the kept store to now: {rows} rows and {events} events since {newest}")
    fill(engine, now, notifications, range(rows), range(events))
    cutoff = now - dt.timedelta(seconds=SPAN_SECONDS)
    event_columns = (e.c.started_at, e.c.detected_at, e.c.resolved_at, e.c.status, e.c.recovered)
    with engine.begin() as conn:
        totals.added(conn, [{"created_at": r[0], "channel": r[1]} for r in conn.execute(
            sa.select(n.c.created_at, n.c.channel).where(n.c.created_at > newest))])
        totals.removed(conn, conn.execute(sa.select(n.c.created_at, n.c.channel).where(n.c.created_at <= cutoff)).all())
        conn.execute(n.delete().where(n.c.created_at <= cutoff))
        deltas = _event_deltas(totals, conn.execute(sa.select(*event_columns).where(e.c.detected_at > newest_event)))
        deltas.subtract(_event_deltas(totals, conn.execute(sa.select(*event_columns).where(e.c.detected_at <= cutoff))))
        totals.change(conn, deltas)
        conn.execute(e.delete().where(e.c.detected_at <= cutoff))
    return rows


def _ensure_indexes(ext: Any) -> None:
    """A kept store made before a column or an index was added gets it (the ``ALTER TABLE``
    that ``check-database`` prints, and the index, as the migrations would add them)."""
    models = (ext.models.Notification, ext.models.EmergencyEvent, ext.models.HourlyTotal)
    with ext.engine.begin() as conn:
        inspector = sa.inspect(conn)
        for model in models:
            table = model.__table__
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    progress(f"  adding column {table.name}.{column.name} to the kept store")
                    conn.execute(sa.text(add_column_sql(table, column, conn.dialect)))
    with ext.engine.begin() as conn:
        for model in models:
            for index in model.__table__.indexes:
                index.create(conn, checkfirst=True)


def _run(suffix: str, uri: str, fill: Fill, notifications: int, options: Options, *,
         build: bool, keep: bool = False) -> dict[str, Any]:
    """Measure the store at ``uri``: filled by ``fill`` when ``build``; else a kept store, which
    is brought to now first when ``keep``."""
    app, client = build_app(uri, os.path.join(DATA_DIR, "instance"))
    ext = app.extensions["notify_emergency"]
    key = f"dashboard{suffix}"
    try:
        extra: dict[str, Any] = {f"{key}_state_backend": app.config.get("NOTIFY_EMERGENCY_STATE_BACKEND", "memory"),
                                 f"{key}_store": "built" if build else "kept"}
        if build:
            start = time.perf_counter()
            fill(ext.engine, utcnow().replace(microsecond=0), notifications)
            extra[f"{key}_fill_s"] = round(time.perf_counter() - start, 1)
            progress(f"  filled in {extra[f'{key}_fill_s']} s")
        if build or not ext.store.hourly.ready():
            extra[f"{key}_rebuild_s"] = _rebuild(ext)
        elif keep:
            _ensure_indexes(ext)
            start = time.perf_counter()
            extra[f"{key}_rows_added"] = _bring_to_now(ext, fill, notifications)
            extra[f"{key}_to_now_s"] = round(time.perf_counter() - start, 1)
        extra[f"{key}_notifications"] = _count(ext.engine, "notify_emergency_notification")
        extra[f"{key}_events"] = _count(ext.engine, "notify_emergency_event")
        return report(client, options, suffix, extra, ext.engine)
    finally:
        ext.close()
        _forget_redis_keys(app)
        with app.app_context():
            app.extensions["bench_db"].engine.dispose()


def bench_sqlite(options: Options) -> dict[str, Any]:
    """Every window's p95 on SQLite with 1M notifications and 100k events."""
    os.makedirs(DATA_DIR, exist_ok=True)
    path = os.path.join(DATA_DIR, f"dashboard-{DATASET_VERSION}.sqlite")
    reuse = options.quick and os.path.exists(path)
    if not reuse and os.path.exists(path):
        os.remove(path)
    uri = f"sqlite:///{path}"
    if reuse:
        engine = sa.create_engine(uri)
        try:
            reuse = _count(engine, "notify_emergency_notification") == NOTIFICATIONS
            if reuse:
                _shift_sqlite_to_now(engine)
        except sa.exc.OperationalError:
            reuse = False
        engine.dispose()
        if not reuse:
            os.remove(path)
    progress(f"  SQLite dataset: {'stored' if reuse else 'building'} ({path})")
    return _run("", uri, _fill_sqlite, NOTIFICATIONS, options, build=not reuse)


def _kept(engine: sa.engine.Engine) -> bool:
    """Does this store hold a whole 10M dataset (give or take the hours moved by ``_bring_to_now``)?"""
    try:
        count = _count(engine, "notify_emergency_notification")
        events = _count(engine, "notify_emergency_event")
    except sa.exc.SQLAlchemyError:
        return False
    return abs(count - FULL_NOTIFICATIONS) < FULL_NOTIFICATIONS // 100 and abs(events - EVENTS) < EVENTS // 100


def bench_sqlite_10m(options: Options) -> dict[str, Any]:
    """The same with 10M notifications (full run only), in a file kept under ``bench/.data/``."""
    if options.quick:
        return {}
    os.makedirs(DATA_DIR, exist_ok=True)
    path = os.path.join(DATA_DIR, f"dashboard-10m-{DATASET_VERSION}.sqlite")
    keep = False
    if os.path.exists(path) and not FRESH:
        engine = sa.create_engine(f"sqlite:///{path}")
        keep = _kept(engine)
        engine.dispose()
    if not keep and os.path.exists(path):
        os.remove(path)
    progress(f"  SQLite 10M store: {'kept' if keep else 'building'} ({path})")
    return _run("_10m", f"sqlite:///{path}", _fill_sqlite, FULL_NOTIFICATIONS, options, build=not keep, keep=keep)


def _bench_server(options: Options, suffix: str, server_url: str, fill: Fill) -> dict[str, Any]:
    """10M notifications on a database server, in the database ``KEPT_DATABASE`` (full run only)."""
    if options.quick:
        return {}
    kind = "postgres" if server_url.startswith("postgresql") else "mariadb"
    server = sa.create_engine(server_url + ("/postgres" if kind == "postgres" else "/"), isolation_level="AUTOCOMMIT")
    uri = f"{server_url}/{KEPT_DATABASE}"
    try:
        with server.connect() as conn:
            if kind == "postgres":
                exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                      {"d": KEPT_DATABASE}).first() is not None
            else:
                exists = conn.execute(sa.text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :d"),
                                      {"d": KEPT_DATABASE}).first() is not None
            keep = False
            if exists and not FRESH:
                engine = sa.create_engine(uri)
                keep = _kept(engine)
                engine.dispose()
            if exists and not keep:
                conn.execute(sa.text(f"DROP DATABASE {KEPT_DATABASE}{' WITH (FORCE)' if kind == 'postgres' else ''}"))
            if not keep:
                conn.execute(sa.text(f"CREATE DATABASE {KEPT_DATABASE}"))
    except Exception as exc:  # no server here: say so, measure the rest
        server.dispose()
        progress(f"  {kind} not reachable: {exc}")
        return {f"dashboard_api_p95_ms{suffix}_skipped": f"{kind} not reachable: {type(exc).__name__}"}
    server.dispose()
    progress(f"  {kind} 10M store: {'kept' if keep else 'building'} (database {KEPT_DATABASE})")
    return _run(suffix, uri, fill, FULL_NOTIFICATIONS, options, build=not keep, keep=keep)


def bench_mariadb(options: Options) -> dict[str, Any]:
    return _bench_server(options, "_mariadb", MARIADB_SERVER, _fill_mariadb)


def bench_postgres(options: Options) -> dict[str, Any]:
    return _bench_server(options, "_postgres", POSTGRES_SERVER, _fill_postgres)


BENCHMARKS = [("dashboard_api_p95_ms", bench_sqlite), ("dashboard_api_p95_ms_10m", bench_sqlite_10m),
              ("dashboard_api_p95_ms_mariadb", bench_mariadb), ("dashboard_api_p95_ms_postgres", bench_postgres)]


# -- where a request's time goes ----------------------------------------------------------
def trace(kind: str, explain_ms: float = 5.0) -> None:
    """Print every SQL statement of one overview request per window with its time, and the
    plan (``EXPLAIN ANALYZE``; SQLite: ``EXPLAIN QUERY PLAN``) of those over ``explain_ms``.
    On the kept 10M store of ``kind`` (``sqlite``, ``mariadb``, ``postgres``), brought to now.

        python -m bench.dashboard trace postgres
    """
    if kind == "sqlite":
        uri, fill = f"sqlite:///{os.path.join(DATA_DIR, f'dashboard-10m-{DATASET_VERSION}.sqlite')}", _fill_sqlite
    else:
        server, fill = {"mariadb": (MARIADB_SERVER, _fill_mariadb), "postgres": (POSTGRES_SERVER, _fill_postgres)}[kind]
        uri = f"{server}/{KEPT_DATABASE}"
    app, client = build_app(uri, os.path.join(DATA_DIR, "instance"))
    ext = app.extensions["notify_emergency"]
    engine = ext.engine
    seen: list[tuple[float, str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append(((time.perf_counter() - conn.info["bench_started"].pop()) * 1000, statement, parameters))

    try:
        _ensure_indexes(ext)
        if not _kept(engine):
            raise SystemExit(f"no kept 10M store at {uri}: run bench/run.py --only dashboard_api_p95_ms"
                             f"{'_10m' if kind == 'sqlite' else '_' + kind} first")
        _bring_to_now(ext, fill, FULL_NOTIFICATIONS)
        sa.event.listen(engine, "before_cursor_execute", before)
        sa.event.listen(engine, "after_cursor_execute", after)
        for window in WINDOWS:
            url = f"/emergency/api/overview?window={window}"
            client.get(url)
            seen.clear()
            start = time.perf_counter()
            client.get(url)
            total = (time.perf_counter() - start) * 1000
            print(f"== {window}: {total:.1f} ms, {len(seen)} statements, {sum(s[0] for s in seen):.1f} ms in SQL")
            statements = list(seen)
            for ms, statement, parameters in statements:
                print(f"{ms:8.1f} ms  {' '.join(statement.split())[:400]}  {parameters!r:.200}")
                if ms >= explain_ms and statement.lstrip().upper().startswith("SELECT"):
                    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "mariadb": "ANALYZE FORMAT=JSON ",
                              "postgres": "EXPLAIN (ANALYZE, BUFFERS) "}[kind]
                    raw = engine.raw_connection()
                    try:
                        cursor = raw.cursor()
                        cursor.execute(prefix + statement, parameters)
                        for row in cursor.fetchall():
                            print("            | " + " ".join(str(c) for c in row))
                    finally:
                        raw.close()
            seen.clear()
    finally:
        sa.event.remove(engine, "before_cursor_execute", before) if sa.event.contains(
            engine, "before_cursor_execute", before) else None
        sa.event.remove(engine, "after_cursor_execute", after) if sa.event.contains(
            engine, "after_cursor_execute", after) else None
        ext.close()
        _forget_redis_keys(app)
        engine.dispose()


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 3 or sys.argv[1] != "trace":
        raise SystemExit("usage: python -m bench.dashboard trace sqlite|mariadb|postgres [explain_ms]")
    trace(sys.argv[2], *(float(a) for a in sys.argv[3:4]))

"""Benchmarks of the admin dashboard's overview JSON on a large store.

* ``dashboard_api_p95_ms``: p95 latency (milliseconds) of ``GET <prefix>/api/overview``
  (default window, 24 h) through the full request path (login session, admin check, every
  metric, JSON), with 1,000,000 notifications and 10,000 emergency events stored on SQLite.
  Target: at most 100 ms.
* ``dashboard_api_p95_ms_mariadb``: the same on MariaDB (127.0.0.1:3306), in a database of
  its own, created and dropped by the run.

The rows are spread evenly over the last 30 days (so a 24 h window holds ~33,000
notifications): 70% delivered over the socket, 20% by flash, 8% by poll, 2% still waiting.
The 7 d and 30 d windows are measured too and reported without a target. ``--quick`` uses
fewer requests and, for SQLite, the dataset built once under ``bench/.data/`` (its times are
shifted to end now before measuring).
"""

from __future__ import annotations

import datetime as dt
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
from flask_notify_emergency.models import utcnow

from .timing import Options, progress

TARGET_MS = 100.0
NOTIFICATIONS = 1_000_000
EVENTS = 10_000
SPAN_SECONDS = 30 * 86400
USERS = 5000
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".data")
#: Bumped whenever the schema or the rows change, so ``--quick`` never measures a stale store.
DATASET_VERSION = 2
MARIADB_SERVER = os.environ.get("BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")


def build_app(database_uri: str, instance: str) -> tuple[Flask, Any]:
    """A host app on ``database_uri`` with one admin; returns (app, a logged-in admin client)."""
    app = Flask(f"bench_dashboard_{uuid.uuid4().hex[:8]}", instance_path=instance)
    app.config.update(SECRET_KEY="bench-secret", SQLALCHEMY_DATABASE_URI=database_uri,
                      NOTIFY_EMERGENCY_MONITOR_ENABLED=False)

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
def _fill_sqlite(engine: sa.engine.Engine, now: dt.datetime) -> None:
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    when = f"strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || (i * {SPAN_SECONDS} / :n) || ' seconds') || '.000000'"
    with engine.begin() as conn:
        conn.execute(sa.text(f"""
            WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)
            INSERT INTO notify_emergency_notification (user_id, audience, title, message, priority, category,
                created_at, delivered, delivered_at, channel, attempts)
            SELECT CAST(i % {USERS} AS TEXT), 'user', 'Bench notification ' || i, 'A message.', 'normal',
                'system', {when}, i % 50 <> 0, CASE WHEN i % 50 <> 0 THEN {when} END,
                CASE WHEN i % 50 = 0 THEN NULL WHEN i % 10 < 7 THEN 'realtime' WHEN i % 10 < 9 THEN 'flash'
                     ELSE 'poll' END, 1
            FROM seq"""), {"n": NOTIFICATIONS})
        conn.execute(sa.text(f"""
            WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)
            INSERT INTO notify_emergency_event (level, failure_type, status, reason, affected_users,
                started_at, detected_at, resolved_at, actions, manual_intervention, recovered)
            SELECT i % 4 + 1, 'manual', 'resolved', 'bench event ' || i, 0,
                strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || (i * {SPAN_SECONDS} / :n + 60) || ' seconds') || '.000000',
                strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || (i * {SPAN_SECONDS} / :n) || ' seconds') || '.000000',
                strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || (i * {SPAN_SECONDS} / :n - 600) || ' seconds') || '.000000',
                '[]', 0, i % 5 <> 0
            FROM seq"""), {"n": EVENTS})


def _fill_mariadb(engine: sa.engine.Engine, now: dt.datetime) -> None:
    when = f"TIMESTAMPADD(SECOND, -FLOOR(seq * {SPAN_SECONDS} / :n), :now)"
    with engine.begin() as conn:
        conn.execute(sa.text(f"""
            INSERT INTO notify_emergency_notification (user_id, audience, title, message, priority, category,
                created_at, delivered, delivered_at, channel, attempts)
            SELECT CAST(seq % {USERS} AS CHAR), 'user', CONCAT('Bench notification ', seq), 'A message.',
                'normal', 'system', {when}, seq % 50 <> 0, IF(seq % 50 <> 0, {when}, NULL),
                CASE WHEN seq % 50 = 0 THEN NULL WHEN seq % 10 < 7 THEN 'realtime' WHEN seq % 10 < 9 THEN 'flash'
                     ELSE 'poll' END, 1
            FROM seq_0_to_{NOTIFICATIONS - 1}"""), {"n": NOTIFICATIONS, "now": now})
        conn.execute(sa.text(f"""
            INSERT INTO notify_emergency_event (level, failure_type, status, reason, affected_users,
                started_at, detected_at, resolved_at, actions, manual_intervention, recovered)
            SELECT seq % 4 + 1, 'manual', 'resolved', CONCAT('bench event ', seq), 0,
                TIMESTAMPADD(SECOND, -FLOOR(seq * {SPAN_SECONDS} / :n) - 60, :now), {when},
                TIMESTAMPADD(SECOND, -FLOOR(seq * {SPAN_SECONDS} / :n) + 600, :now), '[]', 0, seq % 5 <> 0
            FROM seq_0_to_{EVENTS - 1}"""), {"n": EVENTS, "now": now})


def _count(engine: sa.engine.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def _shift_sqlite_to_now(engine: sa.engine.Engine) -> None:
    """Move a stored dataset's times so its newest notification is now."""
    with engine.connect() as conn:
        newest = conn.execute(sa.text("SELECT MAX(created_at) FROM notify_emergency_notification")).scalar_one()
    lag = int((utcnow() - dt.datetime.fromisoformat(str(newest))).total_seconds())
    if lag < 60:
        return
    progress(f"  shifting the stored dataset by {lag} s to end now")
    shift = "strftime('%Y-%m-%d %H:%M:%S', {col}, '+{lag} seconds') || '.000000'"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notify_emergency_notification SET created_at = "
                             + shift.format(col="created_at", lag=lag) + ", delivered_at = CASE WHEN delivered_at "
                             "IS NULL THEN NULL ELSE " + shift.format(col="delivered_at", lag=lag) + " END"))
        conn.execute(sa.text("UPDATE notify_emergency_event SET "
                             + ", ".join(f"{c} = " + shift.format(col=c, lag=lag)
                                         for c in ("started_at", "detected_at", "resolved_at"))))


# -- measuring ---------------------------------------------------------------------------
def measure(client: Any, window: str, requests: int) -> list[float]:
    """Milliseconds of each of ``requests`` overview requests (after three warm-ups)."""
    url = f"/emergency/api/overview?window={window}"
    for _ in range(3):
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    return times


def p95(times: list[float]) -> float:
    return round(statistics.quantiles(times, n=20)[-1], 1)


def report(key: str, client: Any, options: Options, extra: dict[str, Any]) -> dict[str, Any]:
    day = measure(client, "24h", options.pick(60, 300))
    progress(f"  24h: p50 {statistics.median(day):.1f} ms, p95 {p95(day)} ms")
    result = {key: p95(day), f"{key}_p50": round(statistics.median(day), 1), "targets": {key: TARGET_MS}, **extra}
    # the longer windows have no target; --quick leaves them out to stay under a minute
    for window in () if options.quick else ("7d", "30d"):
        times = measure(client, window, 20)
        result[f"{key}_{window}_window"] = p95(times)
        progress(f"  {window}: p95 {p95(times)} ms")
    return result


def _run(key: str, uri: str, instance: str, fill: Callable[[sa.engine.Engine, dt.datetime], None] | None,
         options: Options) -> dict[str, Any]:
    app, client = build_app(uri, instance)
    ext = app.extensions["notify_emergency"]
    try:
        if fill is not None:
            start = time.perf_counter()
            fill(ext.engine, utcnow().replace(microsecond=0))
            progress(f"  filled in {time.perf_counter() - start:.0f} s")
        sizes = {f"{key}_notifications": _count(ext.engine, "notify_emergency_notification"),
                 f"{key}_events": _count(ext.engine, "notify_emergency_event")}
        return report(key, client, options, sizes)
    finally:
        ext.close()
        with app.app_context():
            app.extensions["bench_db"].engine.dispose()


def bench_sqlite(options: Options) -> dict[str, Any]:
    """The overview JSON's p95 on SQLite with 1M notifications and 10k events."""
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
    return _run("dashboard_api_p95_ms", uri, os.path.join(DATA_DIR, "instance"),
                None if reuse else _fill_sqlite, options)


def bench_mariadb(options: Options) -> dict[str, Any]:
    """The same on MariaDB, in a database of its own."""
    key = "dashboard_api_p95_ms_mariadb"
    server = sa.create_engine(MARIADB_SERVER + "/", isolation_level="AUTOCOMMIT")
    name = f"ne_bench_{uuid.uuid4().hex[:10]}"
    try:
        with server.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except Exception as exc:  # no MariaDB here: say so, measure the rest
        server.dispose()
        progress(f"  MariaDB not reachable: {exc}")
        return {f"{key}_skipped": f"MariaDB not reachable: {type(exc).__name__}"}
    try:
        return _run(key, f"{MARIADB_SERVER}/{name}", os.path.join(DATA_DIR, "instance"), _fill_mariadb, options)
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        server.dispose()


BENCHMARKS = [("dashboard_api_p95_ms", bench_sqlite), ("dashboard_api_p95_ms_mariadb", bench_mariadb)]

"""MTTD runs from the failure's start (the earliest evidence since the last passing check, else
that check) to its detection; MTTR from detection to resolution; both keep sub-second
precision on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import sqlalchemy as sa

from flask_notify_emergency import signals
from flask_notify_emergency.detect.evidence import FAILED_DELIVERY
from flask_notify_emergency.detect.evidence import utc_from_epoch as utc
from flask_notify_emergency.models import utcnow
from flask_notify_emergency.respond import emergency
from tests.support.apps import build_example, drop_tables
from tests.support.cli import event_rows, invoke
from tests.support.databases import own_database
from tests.support.outages import PrivateRedis
from tests.support.services import wait_until


def kpis(output: str) -> dict[str, float]:
    return {k["key"]: k["value"] for k in json.loads(output)["kpis"]}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb),
                                  pytest.param("postgres", marks=pytest.mark.postgres)])
def test_mttd_and_mttr_of_a_crafted_history_are_exact(kind, tmp_path):
    base = float(int(time.time()) - 3600)  # an hour ago, to the second: every time below is exact
    with own_database(kind, tmp_path) as url:
        app, _ = build_example({"SQLALCHEMY_DATABASE_URI": url})
        ext = app.extensions["notify_emergency"]
        try:
            with app.app_context():
                # 1. a check passed; a notification sent at +10.5 was never acknowledged (its
                #    timeout arrives later, as the sweeper reports it), a delivery failed at +11;
                #    detected at +12.75, resolved at +20
                ext.evidence.passed(base, base + 0.25)
                signals.notification_failed.send(app, notification={"id": 1, "user_id": "2",
                                                                    "created_at": utc(base + 10.5).isoformat() + "Z"},
                                                 error="no acknowledgement within 5s", exception=None)
                ext.evidence.record(FAILED_DELIVERY, base + 11.0)
                first = emergency.open_event(ext, level=2, failure_type="realtime_connection", reason="crafted",
                                             triggered_by="monitor", detected_at=utc(base + 12.75))
                emergency.resolve_event(ext, first["id"], "monitor", True, resolved_at=utc(base + 20.0))
                # 2. a check ran from +100 to +100.5 and passed (older evidence is void); no
                #    evidence after it; detected at +103, resolved at +104
                ext.evidence.passed(base + 100.0, base + 100.5)
                second = emergency.open_event(ext, level=2, failure_type="realtime_connection", reason="crafted",
                                              triggered_by="monitor", detected_at=utc(base + 103.0))
                emergency.resolve_event(ext, second["id"], "monitor", True, resolved_at=utc(base + 104.0))

            rows = {r["id"]: r for r in event_rows(app)}
            assert rows[first["id"]]["started_at"] == utc(base + 10.5)  # microseconds kept
            assert rows[first["id"]]["detected_at"] == utc(base + 12.75)
            assert rows[second["id"]]["started_at"] == utc(base + 100.5)
            assert first["evidence"]["failure_start"]["from"] == "ack-timeout"
            assert second["evidence"]["failure_start"]["from"] == "last-passing-check"

            result = invoke(app, "generate-metrics", "--period", "last_24_hours", "--format", "json")
            assert result.exit_code in (0, 1), result.output
            values = kpis(result.stdout)
            assert values["mttd_seconds"] == (12.75 - 10.5 + 103.0 - 100.5) / 2  # 2.375
            assert values["mttr_seconds"] == (20.0 - 12.75 + 104.0 - 103.0) / 2  # 4.125
        finally:
            drop_tables(app)


def test_mariadb_keeps_microseconds():
    pytest.importorskip("pymysql")
    with own_database("mariadb") as url:
        app, _ = build_example({"SQLALCHEMY_DATABASE_URI": url})
        try:
            ext = app.extensions["notify_emergency"]
            with ext.engine.connect() as conn:
                columns = conn.execute(sa.text(
                    "SELECT column_name, datetime_precision FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND data_type = 'datetime'")).all()
            assert columns and {precision for _, precision in columns} == {6}
            at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901)
            with app.app_context():
                event = emergency.open_event(ext, level=3, failure_type="manual", reason="precision",
                                             triggered_by="ops", started_at=at, detected_at=at)
            assert event_rows(app)[0]["started_at"] == at and event["id"]
        finally:
            drop_tables(app)


def test_the_running_monitor_times_a_real_outage_from_its_last_passing_check(make_app):
    """The message queue (a private redis-server) is killed under a running monitor."""
    interval = 1.0
    queue = PrivateRedis()
    try:
        app, _ = make_app(SOCKETIO_MESSAGE_QUEUE=queue.url, NOTIFY_EMERGENCY_MONITOR_INTERVAL=interval,
                          NOTIFY_EMERGENCY_CANARY_TIMEOUT=0.5, NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT=1.0,
                          NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1, NOTIFY_EMERGENCY_RECOVERY_BACKOFF=0.05)
        ext = app.extensions["notify_emergency"]
        ext.monitor.start()
        try:
            wait_until(lambda: (ext.monitor.last or {}).get("status") == "healthy", timeout=20,
                       message="a passing check of the monitor")
            killed_at = utcnow()
            queue.kill()
            rows = wait_until(lambda: [r for r in event_rows(app) if any(a["action"] == "detected" for a in r["actions"])],
                              timeout=30, message="the monitor to detect the outage and record its check")
        finally:
            ext.monitor.stop()
        event = rows[0]
        assert (event["failure_type"], event["triggered_by"]) == ("realtime_connection", "monitor")
        assert event["evidence"]["failure_start"]["from"] == "last-passing-check"
        # the failure began after the last passing check and before the detection
        assert event["started_at"] <= killed_at <= event["detected_at"]
        detection = next(a for a in event["actions"] if a["action"] == "detected")["detail"]
        mttd = (event["detected_at"] - event["started_at"]).total_seconds()
        # one interval of waiting plus the detecting check; the tick's own bookkeeping (a few
        # database writes) on top is allowed one more interval on a loaded machine
        assert 0 < mttd <= interval + detection["check_seconds"] + interval
        assert mttd >= detection["check_seconds"]
    finally:
        queue.stop()

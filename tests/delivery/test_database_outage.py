"""The database goes away: a real PostgreSQL database reached through a TCP proxy the test cuts."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from flask_notify_emergency.models import utcnow
from flask_notify_emergency.detect.classify import classify
from flask_notify_emergency.detect.health import run_health_checks
from flask_notify_emergency.respond import emergency
from tests.support.outages import event_rows
from tests.support.receivers import HttpSink
from tests.support.services import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def webhook() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.stop()


def test_database_down_is_level_1_alerts_directly_and_is_recorded_with_its_real_times_when_back(
        proxied_database, webhook, make_app):
    # make_app last: its teardown (dropping the tables) runs while the proxy is still open
    proxy, url = proxied_database
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=url, NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1,
                      NOTIFY_EMERGENCY_ALERT_WEBHOOKS=[webhook.url + "/hook"],
                      NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS=0.2)
    ext = app.extensions["notify_emergency"]
    before_pass = utcnow()
    assert ext.monitor.tick()["status"] == "healthy"  # the last passing check

    proxy.cut()
    report = run_health_checks(ext)
    database = report.checks["database"]
    assert database.status == "failed" and database.error_type == "OperationalError"
    assert "sqlalchemy.exc.DBAPIError" in database.error_types
    assert report.status == "critical"
    finding = classify(report)
    assert (finding.failure_type, finding.level) == ("database_persistence", 1)
    assert finding.evidence["error_type"] == "OperationalError"

    tick = ext.monitor.tick()
    detected_by = utcnow()
    assert tick["status"] == "database-unreachable"
    assert "could not be recorded: the database is unreachable (OperationalError)" in tick["error"]
    assert "SQLALCHEMY_DATABASE_URI" in tick["error"]
    # the alert went out while the database is down, although no event could be stored
    hooks = wait_until(lambda: webhook.received("/hook"), timeout=10, message="the direct alert")
    assert hooks[0]["level"] == 1 and "database_persistence" in hooks[0]["subject"]
    # a second tick while still down does not page again
    assert ext.monitor.tick()["status"] == "database-unreachable"
    assert len(webhook.received("/hook")) == 1
    # this worker did not switch itself into a mode the cluster never recorded
    assert ext.control.mode == "normal"

    proxy.open()
    back_by = utcnow()
    assert event_rows(app) == []  # nothing was half-written while it was down
    assert ext.control.read("mode", "normal") == "normal"
    wait_until(lambda: run_health_checks(ext).status == "healthy", timeout=15, interval=0.2,
               message="the database check to pass again")
    # the next tick writes what the monitor detected while the database was down, with its times
    ext.monitor.tick()
    rows = event_rows(app)
    assert len(rows) == 1
    event = rows[0]
    assert (event["failure_type"], event["level"], event["triggered_by"]) == ("database_persistence", 1, "monitor")
    assert event["status"] == "resolved" and event["recovered"] is True
    assert before_pass <= event["started_at"] < event["detected_at"] <= detected_by <= back_by <= event["resolved_at"]
    assert event["evidence"]["recorded_late"] is True
    assert event["evidence"]["failure_start"]["from"] == "last-passing-check"
    assert emergency.current_event(ext) is None
    # and the page it sent while down is followed by its resolution
    resolved = wait_until(lambda: webhook.received("/hook")[1:], timeout=10, message="the resolved alert")
    assert "resolved" in json.dumps(resolved[0]).lower()


def test_readiness_fails_while_the_database_is_cut_off(proxied_database, make_app):
    proxy, url = proxied_database
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=url, NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT=1.0)
    client = app.test_client()
    assert client.get("/emergency/readyz").status_code == 200
    proxy.cut()
    response = client.get("/emergency/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "not ready"}
    assert client.get("/emergency/livez").status_code == 200
    proxy.open()  # back, so the app's tables can be dropped
    assert client.get("/emergency/readyz").status_code == 200

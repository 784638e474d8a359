"""The database goes away: a real PostgreSQL database reached through a TCP proxy the test cuts."""

from __future__ import annotations

from typing import Iterator

import pytest
import sqlalchemy as sa

from flask_notify_emergency.detect.classify import classify
from flask_notify_emergency.detect.health import run_health_checks
from flask_notify_emergency.respond import emergency
from tests.support.databases import own_database
from tests.support.outages import TcpProxy, event_rows
from tests.support.receivers import HttpSink
from tests.support.services import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def proxied_database() -> Iterator[tuple[TcpProxy, str]]:
    """A database of our own on the shared PostgreSQL, reached through a proxy we control."""
    with own_database("postgres") as direct:
        url = sa.engine.make_url(direct)
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        try:
            yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)
        finally:
            proxy.close()


@pytest.fixture
def webhook() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.stop()


def test_database_down_is_level_1_alerts_directly_and_writes_nothing_half(proxied_database, webhook, make_app):
    # make_app last: its teardown (dropping the tables) runs while the proxy is still open
    proxy, url = proxied_database
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=url, NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1,
                      NOTIFY_EMERGENCY_ALERT_WEBHOOKS=[webhook.url + "/hook"],
                      NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS=0.2)
    ext = app.extensions["notify_emergency"]
    assert run_health_checks(ext).status == "healthy"

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
    assert tick["status"] == "database-unreachable"
    assert "could not be recorded: the database is unreachable (OperationalError)" in tick["error"]
    assert "SQLALCHEMY_DATABASE_URI" in tick["error"]
    # the alert went out although no event could be stored
    hooks = wait_until(lambda: webhook.received("/hook"), timeout=10, message="the direct alert")
    assert hooks[0]["level"] == 1 and "database_persistence" in hooks[0]["subject"]
    # a second tick while still down does not page again
    assert ext.monitor.tick()["status"] == "database-unreachable"
    assert len(webhook.received("/hook")) == 1
    # this worker did not switch itself into a mode the cluster never recorded
    assert ext.control.mode == "normal"

    proxy.open()
    assert event_rows(app) == []  # nothing half-written: no event row without its mode change
    assert ext.control.read("mode", "normal") == "normal"
    wait_until(lambda: run_health_checks(ext).status == "healthy", timeout=15, interval=0.2,
               message="the database check to pass again")
    assert emergency.current_event(ext) is None


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

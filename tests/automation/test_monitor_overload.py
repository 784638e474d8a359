"""Overload is not an outage: the monitor, facing a real PostgreSQL database that answers
slowly, opens a level-3 overload event, keeps real-time delivery on, raises the poll interval
step by step up to its ceiling, and lets it all go when the database is fast again; a cut
database is still the level-1 outage it always was."""

from __future__ import annotations

import pytest

from flask_notify_emergency.delivery import polling
from flask_notify_emergency.respond import emergency
from flask_notify_emergency.detect import run_health_checks
from tests.support.outages import event_rows
from tests.support.services import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CHECK_TIMEOUT = 0.4


def test_a_slow_database_never_pauses_real_time_and_slows_the_polling_down(proxied_database, make_app):
    proxy, url = proxied_database
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=url, NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT=CHECK_TIMEOUT,
                      NOTIFY_EMERGENCY_CANARY_TIMEOUT=CHECK_TIMEOUT, NOTIFY_EMERGENCY_HEALTH_ANSWER_TIMEOUT=20.0,
                      NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1, NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER=1,
                      NOTIFY_EMERGENCY_POLL_INTERVAL=5.0, NOTIFY_EMERGENCY_POLL_BACKOFF_FACTOR=2.0,
                      NOTIFY_EMERGENCY_POLL_INTERVAL_MAX=15.0)
    ext = app.extensions["notify_emergency"]
    # first connections through the proxy on a busy machine may take longer than a deadline
    wait_until(lambda: run_health_checks(ext).status == "healthy", timeout=60, message="a healthy report")
    assert ext.monitor.tick()["status"] == "healthy"
    assert polling.poll_interval(ext) == 5.0

    proxy.latency = 2 * CHECK_TIMEOUT  # every answer comes after twice the check's deadline
    tick = ext.monitor.tick()
    assert tick["status"] == "activated", tick
    c = tick["classification"]
    assert (c["failure_type"], c["level"]) == ("overload", 3), c
    assert c["evidence"]["detail"]["overload"]["answered"] is True
    assert tick["recovery"] == "observing"
    event = tick["event"]
    assert (event["failure_type"], event["level"], event["triggered_by"]) == ("overload", 3, "monitor")
    # real-time delivery goes on: no emergency mode, nothing paused
    assert ext.control.read("mode", "normal") == "normal" and ext.control.mode == "normal"
    assert not ext.control.paused().get("realtime")
    assert tick["health"]["load"] == {"overloaded": True, "streak": 1}
    assert polling.poll_interval(ext) == 10.0

    tick = ext.monitor.tick()  # still slow: the same event, one more step, at the ceiling
    assert tick["status"] == "emergency" and tick["changed"] is None, tick
    assert ext.control.read("mode", "normal") == "normal"
    assert polling.poll_interval(ext) == 15.0

    proxy.latency = 0.0
    tick = ext.monitor.tick()
    assert tick["status"] == "recovered", tick
    assert tick["health"]["load"] == {"overloaded": False, "streak": 0}
    assert polling.poll_interval(ext) == 5.0
    rows = event_rows(app)
    assert [(r["failure_type"], r["level"], r["status"]) for r in rows] == [("overload", 3, "resolved")]
    assert emergency.current_event(ext) is None

    proxy.cut()  # gone, not slow: what the monitor always did
    tick = ext.monitor.tick()
    assert tick["status"] == "database-unreachable", tick
    assert (tick["classification"]["failure_type"], tick["classification"]["level"]) == ("database_persistence", 1)
    proxy.open()
    tick = ext.monitor.tick()  # back: the outage is written with its real times, resolved
    rows = event_rows(app)
    assert [(r["failure_type"], r["level"]) for r in rows][-1] == ("database_persistence", 1)

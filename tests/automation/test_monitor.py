"""The background monitor: started by a real request only, one per cluster, pausable."""

from __future__ import annotations

import click
import sqlalchemy as sa

from flask_notify_emergency.access import SYNTHETIC
from flask_notify_emergency.automation.monitor import HEARTBEAT_KEY
from flask_notify_emergency.respond import emergency
from tests.support.services import wait_until


def ext_of(app):
    return app.extensions["notify_emergency"]


def test_the_monitor_starts_on_the_first_real_request_and_ticks(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_MONITOR_ENABLED=True, NOTIFY_EMERGENCY_MONITOR_INTERVAL=0.2)
    monitor = ext_of(app).monitor
    try:
        assert not monitor.running
        app.test_client().get("/login", environ_base={SYNTHETIC: True})  # the CLI's own page check
        assert not monitor.running
        app.test_client().get("/login")
        assert monitor.running
        beat = wait_until(lambda: ext_of(app).control.read(HEARTBEAT_KEY), timeout=10, message="a heartbeat")
        assert beat["status"] == "healthy" and monitor.is_leader
    finally:
        monitor.stop()
    assert not monitor.running


def test_a_cli_command_serving_a_test_request_does_not_start_it(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_MONITOR_ENABLED=True, NOTIFY_EMERGENCY_MONITOR_INTERVAL=0.2)

    @app.cli.command("fetch-login")
    def fetch_login() -> None:
        click.echo(app.test_client().get("/login").status_code)

    result = app.test_cli_runner().invoke(args=["fetch-login"])
    assert result.output.strip() == "200"
    assert not ext_of(app).monitor.running


def test_only_one_monitor_per_cluster_is_elected(make_app, redis_url, redis_prefix):
    shared = {"NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix}
    first, _ = make_app(**shared)
    second, _ = make_app(**shared)
    one, two = ext_of(first).monitor, ext_of(second).monitor
    assert one.elect() is True
    assert two.elect() is False  # another worker holds the lock
    assert one.elect() is True  # renewing
    one.stop()  # gives the lock up
    assert two.elect() is True


def test_a_paused_monitor_does_nothing(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_MEMORY_LIMIT_MB=1, NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1)  # something to act on
    ext = ext_of(app)
    ext.control.set_paused("monitor", True, "ops")
    assert ext.monitor.tick()["status"] == "paused"
    assert emergency.current_event(ext) is None
    ext.control.set_paused("monitor", False, "ops")
    assert ext.monitor.tick()["status"] == "activated"


def test_an_operators_emergency_is_left_to_the_operator(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER=1)
    ext = ext_of(app)
    emergency.activate(ext, reason="planned maintenance", triggered_by="ops")
    for _ in range(3):
        result = ext.monitor.tick()
        assert result["status"] == "emergency" and result["note"] == "not opened by the monitor"
    assert ext.control.read("mode") == "emergency"


def test_a_worsening_monitor_event_is_raised_and_switches_emergency_mode_on(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1, NOTIFY_EMERGENCY_RECOVERY_BACKOFF=0.01)
    ext = ext_of(app)
    ext.breaker.trip()  # level 3: an event, no emergency mode
    assert ext.monitor.tick()["status"] == "activated"
    ext.breaker.trip()  # the plan half-opened it; it fails again
    event = emergency.current_event(ext)
    assert event["level"] == 3 and ext.control.read("mode", "normal") == "normal"
    app.config["NOTIFY_EMERGENCY_MEMORY_LIMIT_MB"] = 1  # now level 2
    result = ext.monitor.tick()
    assert result["status"] == "emergency" and result["changed"]["to_level"] == 2
    assert emergency.current_event(ext)["level"] == 2
    assert ext.control.read("mode") == "emergency"
    t = ext.audit.table
    with ext.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(t.c.action == "reclassify")).scalar() == 1

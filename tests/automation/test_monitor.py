"""The background monitor: started at boot or by a real request, never by a CLI command; one
per cluster (Redis or database lock), pausable; its heartbeat and the dead man's switch."""

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
        beat = wait_until(lambda: (ext_of(app).control.read(HEARTBEAT_KEY) or {}).get("status") == "healthy"
                          and ext_of(app).control.read(HEARTBEAT_KEY), timeout=10, message="a heartbeat")
        assert beat["process"] == ext_of(app).state.process_id and monitor.is_leader
    finally:
        monitor.stop()
    assert not monitor.running


def test_with_start_on_boot_it_runs_as_soon_as_the_app_exists(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_MONITOR_ENABLED=True, NOTIFY_EMERGENCY_MONITOR_INTERVAL=0.2,
                      NOTIFY_EMERGENCY_START_ON_BOOT=True)
    ext = ext_of(app)
    try:
        assert ext.worker_start.started and ext.monitor.running  # no request at all
        wait_until(lambda: (ext.control.read(HEARTBEAT_KEY) or {}).get("status") == "healthy", timeout=10,
                   message="a tick without any request")
    finally:
        ext.monitor.stop()


def test_a_flask_command_process_starts_nothing_at_boot(make_app, monkeypatch):
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")  # what Flask sets in 'flask <command>'
    app, _ = make_app(NOTIFY_EMERGENCY_MONITOR_ENABLED=True, NOTIFY_EMERGENCY_START_ON_BOOT=True)
    assert not ext_of(app).worker_start.started and not ext_of(app).monitor.running


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


def test_the_database_lock_elects_one_monitor_and_expires(make_app, tmp_path):
    """Memory backend, two apps on one database (a worker and 'flask emergency monitor')."""
    shared = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
              "NOTIFY_EMERGENCY_MONITOR_INTERVAL": 0.4}
    first, _ = make_app(**shared)
    second, _ = make_app(**shared)
    one, two = ext_of(first).monitor, ext_of(second).monitor
    assert one.elect() is True and two.elect() is False
    assert one.elect() is True
    # the holder vanishes without giving the lock up: it lapses after 1.5 intervals
    wait_until(lambda: two.elect(), timeout=5, message="the lock to lapse and pass to the other app")
    assert one.elect() is False
    two.stop()
    assert one.elect() is True


def test_status_shows_the_heartbeat_and_a_stale_one_warns_every_command(make_app):
    from tests.support.cli import invoke, invoke_json
    from tests.support.receivers import HttpSink

    hooks = HttpSink()
    app, _ = make_app(NOTIFY_EMERGENCY_MONITOR_INTERVAL=0.2, NOTIFY_EMERGENCY_ALERT_WEBHOOKS=[hooks.url + "/hook"])
    ext = ext_of(app)
    code, data = invoke_json(app, "status")
    assert code == 0 and data["monitor"]["state"] == "never"
    ext.monitor.tick()
    code, data = invoke_json(app, "status")
    assert data["monitor"]["state"] == "fresh" and data["monitor"]["process"] == ext.state.process_id
    # no beat for three intervals: every command says so (and the switch alerts, in-app)
    wait_until(lambda: invoke_json(app, "status")[1]["monitor"]["state"] == "stale", timeout=5,
               message="the heartbeat to go stale")
    result = invoke(app, "check-database")
    assert "no monitor has checked for" in result.stderr
    assert "flask emergency monitor" in result.stderr
    try:
        alerts = wait_until(lambda: hooks.received("/hook"), timeout=10, message="the dead man's switch alert")
        assert len(alerts) == 1 and "No notification monitor is running" in alerts[0]["subject"]
        assert alerts[0]["kind"] == "watchdog"
        invoke(app, "status")
        assert len(hooks.received("/hook")) == 1  # once per cooldown, not once per command
        # a monitor runs again: one all-clear, to the same targets
        ext.monitor.tick()
        alerts = wait_until(lambda: len(hooks.received("/hook")) == 2 and hooks.received("/hook"), timeout=10,
                            message="the all-clear after the dead man's switch")
        assert "[RESOLVED] A notification monitor is running again" in alerts[1]["subject"]
        ext.monitor.tick()
        assert len(hooks.received("/hook")) == 2  # once, not once per tick
        assert invoke_json(app, "status")[1]["monitor"]["state"] == "fresh"
    finally:
        hooks.stop()


def test_a_half_open_breaker_is_retested_by_the_monitors_own_probes(make_app):
    """No traffic at all: the monitor's canary (nobody is connected to receive a probe
    notification) re-tests the real-time path until the breaker closes."""
    app, _ = make_app(NOTIFY_EMERGENCY_BREAKER_OPEN_SECONDS=0.2, NOTIFY_EMERGENCY_BREAKER_CLOSE_AFTER=2,
                      NOTIFY_EMERGENCY_MONITOR_ACTIVATE_LEVEL=2)
    ext = ext_of(app)
    ext.breaker.trip()
    wait_until(lambda: ext.breaker.current == "half_open", timeout=5, message="the breaker to half-open")
    first = ext.monitor.tick()
    assert first["health"]["breaker_retest"] == {"by": "canary", "ok": True, "breaker": "half_open"}
    second = ext.monitor.tick()
    assert second["health"]["breaker_retest"]["breaker"] == "closed"
    assert ext.breaker.current == "closed"

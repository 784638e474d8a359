"""Operator and automation do not fight: an operator's restore, deactivation or fallback holds
the monitor's activation and automatic rollback off for OPERATOR_HOLD seconds (a more severe
failure lifts it); commands change only what they name."""

from __future__ import annotations

import time

from flask_notify_emergency.respond import emergency
from tests.support.cli import dead_queue_app, invoke, invoke_json, stored_switch


def ext_of(app):
    return app.extensions["notify_emergency"]


def test_an_operators_restore_sticks_through_the_hold_with_automatic_rollback_on(make_app):
    hold = 2.0
    app, _ = dead_queue_app(make_app, NOTIFY_EMERGENCY_AUTO_ROLLBACK=True, NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1,
                            NOTIFY_EMERGENCY_RECOVERY_BACKOFF=0.01, NOTIFY_EMERGENCY_OPERATOR_HOLD=hold,
                            NOTIFY_EMERGENCY_MONITOR_INTERVAL=0.25)
    ext = ext_of(app)
    assert ext.monitor.tick()["status"] == "activated"  # the queue is dead: level 1, plan fails
    ext.monitor.tick()
    assert stored_switch(app, "mode") == "legacy"  # the automatic rollback
    code, result = invoke_json(app, "restore", "--confirm", "--force", "--reason", "we take it from here")
    assert code == 0, result
    assert result["hold"]["action"] == "restore" and stored_switch(app, "mode") != "legacy"
    code, status = invoke_json(app, "status")
    assert status["operator_hold"]["action"] == "restore"
    # the failure goes on; tick at the monitor's pace through the whole hold
    ticks = []
    deadline = time.time() + hold - 0.3
    while time.time() < deadline:
        ticks.append(ext.monitor.tick())
        assert stored_switch(app, "mode") != "legacy", ticks[-1]
        time.sleep(ext.monitor.interval)
    assert len(ticks) >= 3 and all(t["status"] in ("held", "emergency") for t in ticks)
    # the hold is what kept it: released, the automation acts again on the same failure
    code, released = invoke_json(app, "release-hold")
    assert code == 0 and released["released"]["action"] == "restore"
    ext.monitor.tick()
    assert stored_switch(app, "mode") == "legacy"


def test_after_deactivate_the_monitor_holds_off_unless_the_failure_is_more_severe(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1, NOTIFY_EMERGENCY_RECOVERY_BACKOFF=0.01)
    ext = ext_of(app)
    emergency.activate(ext, reason="breaker keeps tripping", triggered_by="ops", level=3)
    code, result = invoke_json(app, "deactivate-emergency", "--resolved-by", "ops")
    assert code == 0 and result["hold"]["level"] == 3
    ext.breaker.trip()  # level 3: what the operator just dealt with
    tick = ext.monitor.tick()
    assert tick["status"] == "held" and "release-hold" in tick["note"]
    assert emergency.current_event(ext) is None and stored_switch(app, "mode") == "normal"
    app.config["NOTIFY_EMERGENCY_MEMORY_LIMIT_MB"] = 1  # level 2: more severe, the hold gives way
    assert ext.monitor.tick()["status"] == "activated"
    assert stored_switch(app, "mode") == "emergency"


def test_restart_services_keeps_an_enabled_flash_fallback(make_app):
    app, _ = make_app()
    assert invoke(app, "enable-fallback", "--type", "flash").exit_code == 0
    code, result = invoke_json(app, "restart-services")
    assert code == 0 and "disable-fallback --type flash" in result["realtime_held"]
    assert stored_switch(app, "paused")["realtime"] is True
    code, verified = invoke_json(app, "verify-services")
    assert code == 0 and verified["services"]["realtime"]["state"] == "held"
    assert invoke(app, "disable-fallback", "--type", "flash").exit_code == 0
    code, result = invoke_json(app, "restart-services")
    assert code == 0 and "realtime_held" not in result and stored_switch(app, "paused")["realtime"] is False


def test_the_emergency_profile_shows_in_status_and_deactivate_clears_it(make_app):
    app, _ = make_app()
    assert invoke(app, "start-services", "--emergency-mode").exit_code == 0
    assert invoke(app, "activate-emergency", "--reason", "queue flapping", "--level", "2").exit_code == 0
    code, status = invoke_json(app, "status")
    assert status["services_profile"] == "emergency" and status["paused"]["realtime"] is True
    assert "started with --emergency-mode" in invoke(app, "status").stdout
    code, result = invoke_json(app, "deactivate-emergency", "--force", "--reason", "queue is steady")
    assert code == 0 and result["profile"] == {"cleared": True, "profile": "normal", "realtime": "resumed"}
    code, status = invoke_json(app, "status")
    assert status["services_profile"] == "normal" and status["paused"]["realtime"] is False
    code, verified = invoke_json(app, "verify-services")
    assert verified["services"]["realtime"]["state"] == "running"


def test_the_dashboards_deactivation_holds_the_automation_too_the_monitors_own_does_not(make_app):
    from tests.views.test_dashboard_api import admin_client, post

    app, _ = make_app(NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER=1)
    ext = ext_of(app)
    emergency.activate(ext, reason="socket queue down", triggered_by="ops", level=2)
    client, token = admin_client(app)
    assert post(client, token, "/emergency/deactivate", reason="queue back", force=True).status_code == 200
    hold = stored_switch(app, "operator_hold")
    assert hold["action"] == "deactivate-emergency" and hold["by"].startswith("admin")
    invoke(app, "release-hold")
    ext.breaker.trip()  # the monitor's own emergency (level 3), which it resolves itself
    assert ext.monitor.tick()["status"] == "activated"
    ext.breaker.close()
    assert ext.monitor.tick()["status"] == "recovered"
    assert stored_switch(app, "operator_hold") is None

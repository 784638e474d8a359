"""``flask emergency`` recovery commands: recovery actions, services, test-recovery."""

from __future__ import annotations

import datetime as dt
import sys
import time

from flask_notify_emergency.audit import cli_actor
from flask_notify_emergency.models import utcnow
from tests.conftest import login, user_id
from tests.support.cli import audit_rows, dead_queue_app, event_rows, invoke, invoke_json, stored_switch
from tests.support.pages import flashes

WRITE_FILE = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"


# -- services ---------------------------------------------------------------------------------
def test_stop_services_pauses_every_service_and_the_app_follows(example):
    app, _ = example
    result = invoke(app, "stop-services")
    assert result.exit_code == 0, result.output
    assert "realtime  running -> paused" in result.output
    assert stored_switch(app, "paused") == {"realtime": True, "monitor": True, "replay": True}
    ext = app.extensions["notify_emergency"]
    assert ext.dispatcher.route(user_id(app, "alice")) == "paused"
    assert ext.monitor.tick()["status"] == "paused"
    [entry] = audit_rows(app, "stop-services")
    assert (entry["actor"], entry["source"], entry["outcome"]) == (cli_actor(), "cli", "ok")


def test_verify_services_fails_while_stopped_and_passes_after_start(example):
    app, _ = example
    invoke(app, "stop-services")
    code, data = invoke_json(app, "verify-services")
    assert code == 1 and data["ok"] is False
    assert data["services"]["realtime"]["state"] == "paused"
    assert invoke(app, "start-services").exit_code == 0
    assert stored_switch(app, "paused") == {"realtime": False, "monitor": False, "replay": False}
    code, data = invoke_json(app, "verify-services")
    assert code == 0, data
    assert {n: s["state"] for n, s in data["services"].items()} == {
        "realtime": "running", "monitor": "disabled", "replay": "running"}


def test_start_services_in_emergency_mode_holds_realtime(example):
    app, _ = example
    invoke(app, "stop-services")
    result = invoke(app, "start-services", "--emergency-mode")
    assert result.exit_code == 0, result.output
    assert stored_switch(app, "paused") == {"realtime": True, "monitor": False, "replay": False}
    code, data = invoke_json(app, "verify-services")
    assert code == 0 and data["profile"] == "emergency"
    assert data["services"]["realtime"]["state"] == "held"
    assert audit_rows(app, "start-services")[0]["arguments"] == {"emergency_mode": True}
    # a restart keeps the profile: real-time delivery stays held
    assert invoke(app, "restart-services").exit_code == 0
    assert stored_switch(app, "paused")["realtime"] is True


def test_verify_services_reads_the_monitor_heartbeat(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_MONITOR_ENABLED=True)
    ext = app.extensions["notify_emergency"]
    ext.monitor.tick()
    code, data = invoke_json(app, "verify-services")
    assert code == 0, data
    assert data["services"]["monitor"]["state"] == "running"
    assert data["services"]["monitor"]["last_tick_seconds_ago"] < 60
    ext.control.write("monitor_heartbeat", {"at": time.time() - 3600}, "test")
    code, data = invoke_json(app, "verify-services")
    assert code == 1 and data["services"]["monitor"]["state"] == "stale"


def test_restart_services_runs_the_operator_restart_commands(make_app, tmp_path):
    marker = tmp_path / "restarted"
    app, _ = make_app(NOTIFY_EMERGENCY_SERVICE_COMMANDS={
        "restart-web": [sys.executable, "-c", WRITE_FILE, str(marker), "web"]})
    code, data = invoke_json(app, "restart-services")
    assert code == 0, data
    assert marker.read_text() == "web"
    assert [(c["name"], c["ok"]) for c in data["commands"]] == [("restart-web", True)]
    assert stored_switch(app, "paused") == {"realtime": False, "monitor": False, "replay": False}
    assert audit_rows(app, "run-service-command")[0]["source"] == "cli"


def test_restart_without_a_restart_command_runs_stop_then_start(make_app, tmp_path):
    log = tmp_path / "log"
    app, _ = make_app(NOTIFY_EMERGENCY_SERVICE_COMMANDS={
        "stop-web": [sys.executable, "-c", WRITE_FILE, str(log), "stopped"],
        "start-web": [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(' started')", str(log)]})
    result = invoke(app, "restart-services")
    assert result.exit_code == 0, result.output
    assert log.read_text() == "stopped started"


def test_a_failing_operator_command_fails_the_command(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_SERVICE_COMMANDS={
        "start-web": [sys.executable, "-c", "raise SystemExit(3)"]})
    result = invoke(app, "start-services")
    assert result.exit_code == 1
    assert "FAIL operator command start-web: exited with status 3" in result.output
    assert stored_switch(app, "paused")["realtime"] is False  # the extension's own services did start
    assert audit_rows(app, "start-services")[0]["outcome"] == "failed"


# -- recovery actions -------------------------------------------------------------------------
def test_auto_recover_on_a_healthy_system_does_nothing(example):
    app, _ = example
    result = invoke(app, "auto-recover")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Automatic recovery: healthy")
    assert event_rows(app) == []
    assert audit_rows(app, "auto-recover")[0]["source"] == "cli"


def test_auto_recover_that_cannot_repair_escalates_and_exits_1(make_app):
    app, _ = dead_queue_app(make_app, NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1)
    code, data = invoke_json(app, "auto-recover")
    assert code == 1
    assert data["status"] == "escalated" and data["classification"]["failure_type"] == "realtime_connection"
    [event] = event_rows(app)
    assert event["status"] == "open" and event["triggered_by"] == cli_actor()
    text = invoke(app, "auto-recover").output  # the open event is reused, not duplicated
    assert "Automatic recovery: escalated" in text and "restart-websockets" in text
    assert len(event_rows(app)) == 1


def test_restart_websockets_reprobes_the_realtime_path(example, make_app):
    app, _ = example
    code, data = invoke_json(app, "restart-websockets")
    assert code == 0, data
    assert data["steps"]["canary"]["verified"] is True
    assert audit_rows(app, "restart-websockets")[0]["source"] == "cli"
    broken, _ = dead_queue_app(make_app)
    result = invoke(broken, "restart-websockets")
    assert result.exit_code == 1 and "Restart WebSockets: FAILED" in result.output


def test_clear_queues_hands_stuck_rows_to_the_flash(make_app, tmp_path):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    ext = app.extensions["notify_emergency"]
    bob = user_id(app, "bob")
    past = utcnow() - dt.timedelta(minutes=5)
    ext.store.create({"user_id": bob, "title": "Stuck", "message": "no ack came", "created_at": past,
                      "delivered": False, "attempts": 1, "realtime_deadline": past})
    code, data = invoke_json(app, "clear-queues")
    assert code == 0, data
    assert data["released"] == 1 and (tmp_path / "backups").is_dir()
    client = app.test_client()
    login(client, "bob")
    assert flashes(client.get("/").get_data(as_text=True)) == ["Stuck: no ack came"]


def test_clear_sessions_problematic_only_drops_stale_registry_entries(example):
    app, _ = example
    ext = app.extensions["notify_emergency"]
    alice = user_id(app, "alice")
    ext.state.connection_opened(alice)  # a socket whose worker died before its disconnect ran
    code, data = invoke_json(app, "clear-sessions", "--problematic-only")
    assert code == 0, data
    assert data["registry_entries_cleared"] == 1 and data["problematic_only"] is True
    assert not ext.state.is_connected(alice)
    assert audit_rows(app, "clear-sessions")[0]["arguments"] == {"problematic_only": True}


# -- test-recovery ----------------------------------------------------------------------------
def test_test_recovery_passes_on_a_healthy_system(make_app, redis_url, redis_prefix):
    app, _ = make_app(NOTIFY_EMERGENCY_REDIS_URL=redis_url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=redis_prefix)
    code, data = invoke_json(app, "test-recovery", "--user", user_id(app, "bob"))
    assert code == 0, data
    outcome = {p["name"]: p["ok"] for p in data["probes"]}
    assert outcome == {"database": True, "shared-state": True, "propagation": True, "breaker": True,
                       "health-checks": True, "recovery-actions": True, "operator-commands": None,
                       "services": True, "fallback": True}
    assert "published to every worker" in next(p["detail"] for p in data["probes"] if p["name"] == "propagation")
    assert stored_switch(app, "paused") is None  # nothing was paused on the way
    assert audit_rows(app, "test-recovery")[0]["source"] == "cli"


def test_test_recovery_reports_a_failing_probe_and_exits_1(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_SERVICE_COMMANDS={"restart-web": ["/nonexistent/restart-web"]})
    result = invoke(app, "test-recovery")
    assert result.exit_code == 1
    assert "FAIL operator-commands" in result.output and "restart-web" in result.output
    assert "1 failed" in result.output

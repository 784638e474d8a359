"""``flask emergency`` detection commands: status, diagnostics, --help of every command."""

from __future__ import annotations

import pytest

from tests.conftest import user_id
from tests.support.cli import dead_queue_app, invoke, invoke_json
from tests.support.pages import notification_rows
from tests.support.services import wait_until

COMMANDS = ("status", "health-check", "check-websockets", "diagnostics", "activate-emergency",
            "deactivate-emergency", "send-notification", "enable-fallback", "disable-fallback",
            "test-fallback", "auto-recover", "restart-websockets", "clear-queues", "clear-sessions",
            "stop-services", "start-services", "restart-services", "verify-services", "test-recovery")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(example, command):
    app, _ = example
    result = invoke(app, command, "--help")
    assert result.exit_code == 0, result.output
    assert f"emergency {command} [OPTIONS]" in result.output
    assert "--json" in result.output


def test_the_command_modules_listed_are_exactly_the_ones_that_exist():
    import importlib
    import os

    from flask_notify_emergency import cli

    present = {name[:-3] for name in os.listdir(os.path.dirname(cli.__file__))
               if name.endswith(".py") and name not in ("__init__.py", "output.py", "command.py", "console.py")}
    assert set(cli.COMMAND_MODULES) == present
    for name in cli.COMMAND_MODULES:
        importlib.import_module(f"flask_notify_emergency.cli.{name}")


def test_every_command_of_the_group_has_json(example):
    from flask_notify_emergency.cli import emergency_group

    app, _ = example
    missing = [name for name in sorted(emergency_group.commands)
               if "--json" not in invoke(app, name, "--help").output]
    assert len(emergency_group.commands) > 40 and missing == []


def test_status_of_a_quiet_system(example):
    app, _ = example
    result = invoke(app, "status")
    assert result.exit_code == 0, result.output
    assert "Delivery mode:   normal" in result.output
    assert "Open emergency:  none" in result.output
    assert "Paused services: none" in result.output
    assert "Team status:     not set" in result.output
    code, data = invoke_json(app, "status")
    assert code == 0
    assert (data["mode"], data["breaker"]["state"], data["event"]) == ("normal", "closed", None)
    assert data["dashboard_status"] is None
    assert data["paused"] == {"realtime": False, "monitor": False, "replay": False}
    assert data["backlog"] == {"undelivered": 0, "oldest_age_seconds": None}
    assert data["shared_state"] == {"backend": "memory", "healthy": True}


def test_status_json_shows_event_paused_services_backlog_and_routing(example):
    app, _ = example
    invoke(app, "activate-emergency", "--reason", "queue down", "--level", "high")
    invoke(app, "stop-services")
    with app.app_context():
        app.extensions["demo"]["notify"].send(user_id(app, "bob"), "Waiting", "for a page")
    code, data = invoke_json(app, "status")
    assert code == 0
    assert data["mode"] == "emergency"
    assert data["delivery"].startswith("fallbacks") and "'emergency'" in data["delivery"]
    assert data["event"]["level"] == 2 and data["event"]["reason"] == "queue down"
    assert data["paused"] == {"realtime": True, "monitor": True, "replay": True}
    waiting = [r for r in notification_rows(app) if not r["delivered"]]
    assert any(r["title"] == "Waiting" for r in waiting)
    assert data["backlog"]["undelivered"] == len(waiting) and data["backlog"]["oldest_age_seconds"] >= 0
    text = invoke(app, "status").output
    assert "Open emergency:  #1 level 2 (high)" in text
    assert "Paused services: realtime, monitor, replay" in text


def test_status_shows_the_team_status_set_by_update_dashboard(example):
    app, _ = example
    assert invoke(app, "update-dashboard", "--status", "emergency_active",
                  "--message", "Emergency procedures in progress").exit_code == 0
    text = invoke(app, "status").output
    assert "Team status:     emergency_active: Emergency procedures in progress (by " in text
    code, data = invoke_json(app, "status")
    assert code == 0
    team = data["dashboard_status"]
    assert (team["status"], team["message"]) == ("emergency_active", "Emergency procedures in progress")
    assert team["updated_by"] and team["updated_at"]


def test_status_sees_a_breaker_tripped_by_another_app_process(make_app, tmp_path):
    # two app objects on one database: the "worker" trips, the operator's process reads
    shared = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    worker, _ = make_app(SQLALCHEMY_DATABASE_URI=shared)
    operator, _ = make_app(SQLALCHEMY_DATABASE_URI=shared)
    worker.extensions["notify_emergency"].breaker.trip()
    code, data = invoke_json(operator, "status")
    assert code == 0
    assert data["breaker"]["state"] == "open" and data["breaker"]["opened_at"]
    assert "circuit breaker is open" in data["delivery"]


def test_a_running_app_follows_the_cli_through_the_database(make_app, tmp_path):
    # memory backend: the worker has no pub/sub and re-reads the database on its refresh
    shared = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    worker, _ = make_app(SQLALCHEMY_DATABASE_URI=shared, NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS=0.1)
    operator, _ = make_app(SQLALCHEMY_DATABASE_URI=shared)
    ext = worker.extensions["notify_emergency"]
    assert ext.control.mode == "normal"
    assert invoke(operator, "activate-emergency", "--reason", "r").exit_code == 0
    wait_until(lambda: ext.control.mode == "emergency", timeout=10, message="the worker to see emergency mode")
    assert invoke(operator, "stop-services").exit_code == 0
    wait_until(lambda: ext.control.paused().get("monitor"), timeout=10, message="the worker to see paused services")


def test_diagnostics_reports_versions_backend_counts_and_redacts_secrets(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_SMS_GATEWAY_URL="https://gw:hunter2@sms.example/send")
    with app.app_context():
        app.extensions["demo"]["notify"].send(user_id(app, "alice"), "t", "m")
    code, data = invoke_json(app, "diagnostics")
    assert code == 0
    assert data["versions"]["Flask"] and data["versions"]["flask-notify-emergency"]
    assert data["backend"]["shared_state"] == "memory"
    assert data["backend"]["database_dialect"] == "sqlite"
    assert data["counts"]["notifications"] == 1 and data["counts"]["undelivered"] == 1
    assert data["config"]["NOTIFY_EMERGENCY_SMS_GATEWAY_URL"] == "https://gw:***@sms.example/send"
    assert data["config"]["NOTIFY_EMERGENCY_ADMIN_USER_IDS"].startswith("<callable")
    text = invoke(app, "diagnostics").output
    assert "hunter2" not in text and "SECRET_KEY" not in text
    assert "NOTIFY_EMERGENCY_URL_PREFIX = '/emergency'" in text


def test_diagnostics_with_redis_shows_the_url_without_password(make_app, redis_url, redis_prefix):
    app, _ = make_app(NOTIFY_EMERGENCY_REDIS_URL=redis_url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=redis_prefix)
    code, data = invoke_json(app, "diagnostics")
    assert code == 0
    assert data["backend"]["shared_state"] == "redis" and data["backend"]["shared_state_healthy"] is True
    assert data["backend"]["redis_key_prefix"] == redis_prefix
    code, status = invoke_json(app, "status")
    assert code == 0 and status["shared_state"] == {"backend": "redis", "healthy": True}


# -- health-check, check-websockets ----------------------------------------------------------
def test_health_check_healthy_prints_each_check_and_exits_0(example):
    app, _ = example
    result = invoke(app, "health-check")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Health: healthy (score 100)")
    for name in ("realtime", "redis", "database", "sessions", "resources"):
        assert f" {name} " in result.output
    code, data = invoke_json(app, "health-check")
    assert code == 0 and data["status"] == "healthy"
    assert set(data["checks"]) == {"realtime", "redis", "database", "sessions", "resources"}


def test_health_check_exits_1_when_critical(make_app):
    app, _ = dead_queue_app(make_app)
    result = invoke(app, "health-check")
    assert result.exit_code == 1, result.output
    assert "Health: critical" in result.output
    assert "FAIL realtime" in result.output


def test_health_check_exits_3_when_degraded(example):
    app, _ = example
    app.extensions["notify_emergency"].breaker.trip()
    code, data = invoke_json(app, "health-check")
    assert (code, data["status"]) == (3, "degraded")
    assert data["checks"]["realtime"]["detail"]["breaker"] == "open"


def test_health_check_only_runs_the_named_checks(example):
    app, _ = example
    code, data = invoke_json(app, "health-check", "--only", "database", "--only", "sessions")
    assert code == 0
    assert set(data["checks"]) == {"database", "sessions"}
    bad = invoke(app, "health-check", "--only", "disk")
    assert bad.exit_code == 2 and "'disk' is not one of" in bad.output


def test_check_websockets_reports_users_namespace_and_canary(example):
    app, _ = example
    result = invoke(app, "check-websockets")
    assert result.exit_code == 0, result.output
    assert "Namespace:       /notify-emergency" in result.output
    assert "Connected users: 0" in result.output
    code, data = invoke_json(app, "check-websockets")
    assert code == 0
    assert data["canary"]["ok"] is True and data["canary"]["detail"]["canary"]["verified"] is True
    assert data["socketio"]["configured"] is True and data["socketio"]["message_queue"] is None


def test_check_websockets_fails_when_the_canary_is_lost(make_app):
    app, _ = dead_queue_app(make_app)
    code, data = invoke_json(app, "check-websockets")
    assert code == 1
    assert data["ok"] is False and data["canary"]["ok"] is False
    assert data["socketio"]["client_manager"] == "RedisManager"


# -- the runbook's script ---------------------------------------------------------------------
def load_script():
    import importlib.util
    import os

    from tests.support.apps import ROOT

    spec = importlib.util.spec_from_file_location(
        "notification_emergency_cli", os.path.join(ROOT, "scripts", "notification_emergency_cli.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runbook_script_maps_each_line_to_flask_emergency(capsys):
    script = load_script()
    assert script.flask_argv(["--app", "myapp", "activate-emergency", "--reason", "r"], {}) == [
        "flask", "--app", "myapp", "emergency", "activate-emergency", "--reason", "r"]
    assert script.flask_argv(["status", "--json"], {"FLASK_APP": "myapp:create_app()"}) == [
        "flask", "--app", "myapp:create_app()", "emergency", "status", "--json"]
    assert script.flask_argv(["--app=other", "status"], {"FLASK_APP": "myapp"})[2] == "other"
    assert script.flask_argv(["status"], {"FLASK_APP": "x", "NOTIFY_EMERGENCY_CLI_GROUP": "ops"})[3] == "ops"
    with pytest.raises(SystemExit) as exited:
        script.flask_argv(["status"], {})
    assert exited.value.code == 2
    assert "Pass --app APP first, or set FLASK_APP" in capsys.readouterr().err

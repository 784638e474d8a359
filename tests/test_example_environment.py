"""The example app takes every setting from the environment, and ``notify-emergency`` (the
installed console command) runs the runbook's commands against it: an operator points it at
MariaDB, Redis, a Redis message queue, a mail server and a webhook without editing code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.apps import ROOT
from tests.support.databases import own_database
from tests.support.receivers import HttpSink, SmtpSink

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.redis]

CONSOLE = os.path.join(os.path.dirname(sys.executable), "notify-emergency")
EXAMPLE = os.path.join(ROOT, "examples", "app.py") + ":flask_app"


def notify_emergency(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``notify-emergency <args>`` as an operator types it, from another directory."""
    return subprocess.run([CONSOLE, *args], env=env, cwd="/", capture_output=True, text=True, timeout=120)


@pytest.fixture
def environment(redis_url: str, redis_prefix: str, tmp_path: Any) -> Any:
    """FLASK_* settings for MariaDB, Redis, the message queue, mail and a webhook."""
    smtp, hooks = SmtpSink(), HttpSink()
    try:
        with own_database("mariadb") as database:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "NOTIFY_EMERGENCY_"))}
            env.pop("DATABASE_URL", None)
            env.update({
                "FLASK_APP": EXAMPLE,
                "FLASK_SECRET_KEY": "from-the-environment",
                "FLASK_SQLALCHEMY_DATABASE_URI": database,
                "FLASK_NOTIFY_EMERGENCY_REDIS_URL": redis_url,
                "FLASK_NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
                "FLASK_SOCKETIO_MESSAGE_QUEUE": redis_url,
                "FLASK_NOTIFY_EMERGENCY_MONITOR_ENABLED": "false",
                "FLASK_NOTIFY_EMERGENCY_SMTP_HOST": "127.0.0.1",
                "FLASK_NOTIFY_EMERGENCY_SMTP_PORT": str(smtp.port),
                "FLASK_NOTIFY_EMERGENCY_SMTP_SENDER": "alerts@example.org",
                "FLASK_NOTIFY_EMERGENCY_ALERT_EMAILS": json.dumps(["ops@example.org"]),
                "FLASK_NOTIFY_EMERGENCY_ALERT_WEBHOOKS": json.dumps([f"{hooks.url}/pager"]),
                "FLASK_NOTIFY_EMERGENCY_BACKUP_DIR": str(tmp_path / "backups"),
            })
            yield env, database, smtp, hooks
    finally:
        smtp.stop()
        hooks.stop()


def test_every_setting_comes_from_the_environment(environment):
    env, database, smtp, hooks = environment
    diagnostics = notify_emergency(env, "diagnostics", "--json")
    assert diagnostics.returncode == 0, diagnostics.stderr
    backend = json.loads(diagnostics.stdout)["backend"]
    assert backend["database_dialect"] == "mysql"
    assert backend["shared_state"] == "redis" and backend["shared_state_healthy"] is True
    assert backend["redis_key_prefix"] == env["FLASK_NOTIFY_EMERGENCY_REDIS_KEY_PREFIX"]
    assert backend["socketio"]["client_manager"] == "RedisManager"

    engine = sa.create_engine(database)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"demo_user", "notify_emergency_notification", "notify_emergency_control"} <= tables

    alerts = notify_emergency(env, "test-alerts", "--json")
    assert alerts.returncode == 0, alerts.stdout + alerts.stderr
    [mail] = smtp.received()
    assert mail["To"] == "ops@example.org" and mail["From"] == "alerts@example.org"
    assert len(hooks.received("/pager")) == 1


def test_the_console_command_needs_an_app():
    env = {k: v for k, v in os.environ.items() if k != "FLASK_APP"}
    result = notify_emergency(env, "status")
    assert result.returncode == 2
    assert "Pass --app APP first, or set FLASK_APP" in result.stderr
    assert "usage: notify-emergency [--app APP] COMMAND" in result.stderr

"""What reaches an operator's terminal: a command that passes prints its result and nothing
else (no traceback, no library log), even against served workers on a real Redis message
queue; the full log is in ``NOTIFY_EMERGENCY_LOG_FILE``, and on the terminal with ``--verbose``."""

from __future__ import annotations

import pytest

from tests.support.apps import ServedApp
from tests.support.cli import flask_process
from tests.support.outages import PrivateRedis
from tests.support.services import free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_recovery_commands_that_pass_print_no_traceback(tmp_path, redis_url, redis_prefix):
    queue = PrivateRedis()
    log = tmp_path / "commands.log"
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "SOCKETIO_MESSAGE_QUEUE": queue.url, "NOTIFY_EMERGENCY_LOG_FILE": str(log)}
    server = None
    try:
        server = ServedApp(free_port(), config)
        for command in ("restart-websockets", "auto-recover", "test-recovery", "clear-sessions", "status"):
            result = flask_process(config, command)
            assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
            assert "Traceback" not in result.stdout + result.stderr, command
            assert result.stderr == "", f"{command} wrote to stderr:\n{result.stderr}"
        assert "pid=" in log.read_text()  # the commands' own log has the records
        verbose = flask_process(config, "restart-websockets", "--verbose")
        assert verbose.returncode == 0 and "flask_notify_emergency" in verbose.stderr
    finally:
        if server is not None:
            server.stop()
        queue.stop()

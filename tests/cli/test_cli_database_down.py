"""Every command with the database cut off: one line saying so, exit 1, no traceback.

The database is a real PostgreSQL database of the test's own, reached through a TCP proxy the
test cuts (connections refused, open ones reset). ``status`` still shows what the shared state
tells (Redis, the workers and the mode they act on).
"""

from __future__ import annotations

import subprocess
from typing import Any

import click
import pytest

from flask_notify_emergency.cli import emergency_group
from flask_notify_emergency.cli.command import LONG_RUNNING
from tests.support.apps import ServedApp
from tests.support.cli import flask_process
from tests.support.services import free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def minimal_arguments(command: click.Command) -> list[str]:
    """Arguments that get past the command's own parsing: a value for each required one."""
    args: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        if isinstance(param, click.Option) and param.is_flag:
            args.append(param.opts[0])
            continue
        if isinstance(param.type, click.Choice):
            value = str(param.type.choices[0])
        elif isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
            value = "1"
        else:
            value = "drill-1"
        if isinstance(param, click.Option):
            args += [param.opts[0], value]
        else:
            args.append(value)
    return args


def one_problem_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{output}"
    return lines[0]


def test_every_command_says_the_database_is_down_in_one_line(proxied_database, make_app, redis_url, redis_prefix):
    proxy, url = proxied_database
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=url, NOTIFY_EMERGENCY_REDIS_URL=redis_url,
                      NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=redis_prefix)
    proxy.cut()
    try:
        runner = app.test_cli_runner()
        # a long-running command (the monitor process) keeps running through the outage instead
        results = {name: runner.invoke(args=["emergency", name, *minimal_arguments(command)], input="y\n")
                   for name, command in sorted(emergency_group.commands.items()) if name not in LONG_RUNNING}
        assert len(results) > 40
        wrong = {name: (r.exit_code, r.output[-600:]) for name, r in results.items()
                 if r.exit_code != 1 or "Traceback" in r.output or "the database is unreachable" not in r.output}
        assert wrong == {}
        for name, result in results.items():
            if name != "status":
                line = one_problem_line(result.output)
                assert line.startswith("Error: the database is unreachable") and "run the command again" in line
        # status shows what it can besides
        status = results["status"].output
        assert "Database:        UNREACHABLE" in status and "Shared state:    redis (healthy)" in status
        assert status.count("Error:") == 1
    finally:
        proxy.open()


def flask_command(url: str, redis_url: str, redis_prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``flask emergency <args>`` in a process of its own, as an operator runs it."""
    return flask_process({"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_REDIS_URL": redis_url,
                          "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix}, *args)


def test_status_in_a_new_process_shows_the_workers_and_their_mode(proxied_database, redis_url, redis_prefix):
    proxy, url = proxied_database
    config = {"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_REDIS_URL": redis_url,
              "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix}
    server = ServedApp(free_port(), config)
    try:
        activated = flask_command(url, redis_url, redis_prefix, "activate-emergency", "--reason", "drill",
                                  "--level", "2")
        assert activated.returncode == 0, activated.stdout + activated.stderr
        proxy.cut()

        def status_down() -> Any:
            result = flask_command(url, redis_url, redis_prefix, "status")
            return result if "Delivery mode:   emergency" in result.stdout else None

        status = wait_until(status_down, timeout=30, message="status to show the workers' mode")
        assert status.returncode == 1
        assert "Traceback" not in status.stdout + status.stderr
        assert one_problem_line(status.stderr).startswith("Error: the database is unreachable")
        assert f"  {server.proc.pid}-" in status.stdout  # the serving worker, by its process id
        assert "Workers:         1 reporting" in status.stdout

        other = flask_command(url, redis_url, redis_prefix, "restart-websockets")
        assert other.returncode == 1 and other.stdout == ""
        assert one_problem_line(other.stderr).startswith("Error: the database is unreachable")
    finally:
        proxy.open()
        server.stop()

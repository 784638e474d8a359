"""Every command with the database cut off: one line saying so, exit 1, no traceback.

The database is a real PostgreSQL database of the test's own, reached through a TCP proxy the
test cuts (connections refused, open ones reset). ``status`` still shows what the shared state
tells (Redis, the workers and the mode they act on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Iterator

import click
import pytest
import sqlalchemy as sa

from flask_notify_emergency.cli import emergency_group
from tests.support.apps import EXAMPLES, ROOT, ServedApp
from tests.support.cli import flask_process
from tests.support.databases import own_database
from tests.support.outages import TcpProxy
from tests.support.services import free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def proxied_database() -> Iterator[tuple[TcpProxy, str]]:
    with own_database("postgres") as direct:
        url = sa.engine.make_url(direct)
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        try:
            yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)
        finally:
            proxy.close()


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
        results = {name: runner.invoke(args=["emergency", name, *minimal_arguments(command)], input="y\n")
                   for name, command in sorted(emergency_group.commands.items())}
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

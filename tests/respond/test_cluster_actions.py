"""Actions that only a serving worker can do on itself, asked for by the CLI of another process."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import socketio
import sqlalchemy as sa

from tests.support.apps import ServedApp, build_example, drop_tables
from tests.support.outages import PrivateRedis
from tests.support.cli import invoke_json
from tests.support.pages import NAMESPACE
from tests.support.services import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def cluster_rows(engine: sa.engine.Engine, action: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT actor, outcome FROM notify_emergency_audit WHERE action = :a AND source = 'cluster'"),
            {"a": action}).all()
    return [dict(r._mapping) for r in rows]


def serving_pid(server: ServedApp) -> int:
    """The process that serves: the server's own, or gunicorn's one worker under its master."""
    if not server.server.startswith("gunicorn"):
        return server.proc.pid
    children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, f"gunicorn {server.proc.pid} runs {children}, not one worker"
    return int(children[0])


def test_restart_websockets_from_the_cli_restarts_every_serving_worker(tmp_path, redis_url, redis_prefix,
                                                                       server_kind):
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix}
    operator_app, _ = build_example(config)  # the CLI's own process: it holds no sockets
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    servers = [ServedApp(free_port(), config, server=server_kind)]
    servers.append(ServedApp(free_port(), config, server=server_kind))
    client = socketio.Client(reconnection=False)
    disconnected: list[bool] = []
    client.on("disconnect", lambda *a: disconnected.append(True), namespace=NAMESPACE)
    try:
        session = servers[0].session_as("alice")
        client.connect(servers[0].url, namespaces=[NAMESPACE], transports=["websocket"],
                       headers={"Cookie": "; ".join(f"{k}={v}" for k, v in session.cookies.items())})
        result = operator_app.test_cli_runner().invoke(args=["emergency", "restart-websockets", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["cluster_request"]["action"] == "restart-websockets"
        # the command waited for both workers' own answers
        assert sorted(w["pid"] for w in data["workers"]) == sorted(serving_pid(s) for s in servers)
        assert all(w["ok"] and w["answered"] for w in data["workers"])

        rows = wait_until(lambda: len({r["actor"] for r in cluster_rows(engine, "restart-websockets")}) >= 2
                          and cluster_rows(engine, "restart-websockets"), timeout=15,
                          message="both serving workers to restart their real-time layer")
        assert all("via worker" in r["actor"] for r in rows)
        # the worker holding alice's socket disconnected it so the browser connects afresh
        wait_until(lambda: disconnected, timeout=10, message="alice's socket to be disconnected")
    finally:
        client.disconnect()
        for server in servers:
            server.stop()
        engine.dispose()
        drop_tables(operator_app)


def test_restart_websockets_exits_1_naming_the_worker_that_cannot_reach_the_queue(tmp_path, redis_url,
                                                                                 redis_prefix):
    queue = PrivateRedis()  # the Socket.IO message queue, owned by this test
    shared = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.0}
    good = {**shared, "SOCKETIO_MESSAGE_QUEUE": queue.url}
    # this worker's queue is a port nothing listens on: it cannot publish or hear anything
    cut_off = {**shared, "SOCKETIO_MESSAGE_QUEUE": f"redis://127.0.0.1:{free_port()}/0"}
    operator_app, _ = build_example(good)
    servers: list[ServedApp] = []
    try:
        servers = [ServedApp(free_port(), good), ServedApp(free_port(), cut_off)]
        healthy, broken = servers
        result = operator_app.test_cli_runner().invoke(args=["emergency", "restart-websockets", "--timeout", "20"])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        # one line per worker; the broken one is named, with what failed and what to do
        lines = [line for line in result.output.splitlines() if "worker " in line and " on " in line]
        failed = [line for line in lines if line.strip().startswith("FAIL")]
        assert len(failed) == 1, result.output
        assert f"(pid {broken.proc.pid})" in failed[0] and "SOCKETIO_MESSAGE_QUEUE" in failed[0]
        assert any(f"(pid {healthy.proc.pid})" in line and line.strip().startswith("ok") for line in lines)

        code, data = invoke_json(operator_app, "restart-websockets", "--timeout", "20")
        assert code == 1 and data["ok"] is False
        assert [w["pid"] for w in data["workers"] if not w["ok"]] == [broken.proc.pid]
        assert str(broken.proc.pid) in data["workers_error"]
    finally:
        for server in servers:
            server.stop()
        queue.stop()
        drop_tables(operator_app)


def test_an_unknown_cluster_action_is_refused(example):
    from flask_notify_emergency.respond import cluster_actions

    app, _ = example
    with app.app_context(), pytest.raises(ValueError, match="unknown cluster action"):
        cluster_actions.request(app.extensions["notify_emergency"], "reboot", "ops")

"""Actions that only a serving worker can do on itself, asked for by the CLI of another process."""

from __future__ import annotations

from typing import Any

import pytest
import socketio
import sqlalchemy as sa

from tests.cli.test_cli_multiprocess import logged_in
from tests.support.apps import ServedApp, build_example, drop_tables
from tests.support.pages import NAMESPACE
from tests.support.services import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def cluster_rows(engine: sa.engine.Engine, action: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT actor, outcome FROM notify_emergency_audit WHERE action = :a AND source = 'cluster'"),
            {"a": action}).all()
    return [dict(r._mapping) for r in rows]


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
        session = logged_in(servers[0], "alice")
        client.connect(servers[0].url, namespaces=[NAMESPACE], transports=["websocket"],
                       headers={"Cookie": "; ".join(f"{k}={v}" for k, v in session.cookies.items())})
        result = operator_app.test_cli_runner().invoke(args=["emergency", "restart-websockets", "--json"])
        assert result.exit_code == 0, result.output
        assert '"cluster_request"' in result.output

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


def test_an_unknown_cluster_action_is_refused(example):
    from flask_notify_emergency.respond import cluster_actions

    app, _ = example
    with app.app_context(), pytest.raises(ValueError, match="unknown cluster action"):
        cluster_actions.request(app.extensions["notify_emergency"], "reboot", "ops")

"""The CLI steers a running cluster: two served app processes share Redis and one database;
``flask emergency`` runs as a third process and both servers follow it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
import requests
import socketio
import sqlalchemy as sa

from tests.support.apps import ROOT, ServedApp
from tests.support.pages import BANNERS_URL, NAMESPACE, flashes
from tests.support.services import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]

#: pub/sub carries a switch in milliseconds; a worker that only re-read the database
#: (every STATE_REFRESH_SECONDS, set far above this) would miss this deadline
PROPAGATION_DEADLINE = 1.0


def run_cli(workdir: Any, *args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    """One operator command in its own process, as typed in a shell."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    if script:
        argv = [sys.executable, os.path.join(ROOT, "scripts", "notification_emergency_cli.py"), "--app", "cli_app", *args]
    else:
        flask = os.path.join(os.path.dirname(sys.executable), "flask")
        argv = [flask if os.path.exists(flask) else "flask", "--app", "cli_app", "emergency", *args]
    return subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)


def mode_of(server: ServedApp) -> str:
    return str(requests.get(server.url + BANNERS_URL, timeout=5).json()["mode"])


def wait_for_mode(servers: list[ServedApp], mode: str) -> float:
    """Poll every server until each reports ``mode``; return the seconds it took."""
    start = time.monotonic()
    for server in servers:
        wait_until(lambda: mode_of(server) == mode, timeout=PROPAGATION_DEADLINE,
                   message=f"{server.url} to report mode {mode!r}")
    return time.monotonic() - start


def row(engine: sa.engine.Engine, title: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT * FROM notify_emergency_notification WHERE title = :t"),
                             {"t": title}).first()
    return dict(found._mapping) if found else None


def test_cli_process_switches_both_servers_to_fallback_and_back(tmp_path, redis_url, redis_prefix, record_property,
                                                               server_kind):
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 60.0, "NOTIFY_EMERGENCY_ACK_TIMEOUT": 10.0}
    (tmp_path / "cli_app.py").write_text(
        "from tests.support.apps import build_example\n"
        f"app, socketio = build_example({config!r})\n")
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    client = socketio.Client(reconnection=False)
    received: list[dict[str, Any]] = []

    @client.on("notify_emergency:notification", namespace=NAMESPACE)
    def on_notification(data: dict[str, Any]) -> None:  # what the browser script does: show, then ack
        received.append(data)
        client.emit("notify_emergency:ack", {"id": data["id"]}, namespace=NAMESPACE)

    with ServedApp(free_port(), config, server=server_kind) as a, \
            ServedApp(free_port(), config, server=server_kind) as b:
        try:
            with engine.connect() as conn:
                bob = str(conn.execute(sa.text("SELECT id FROM demo_user WHERE username = 'bob'")).scalar_one())
            bob_web = b.session_as("bob")
            cookie = "; ".join(f"{c.name}={c.value}" for c in bob_web.cookies)
            client.connect(b.url, namespaces=[NAMESPACE], headers={"Cookie": cookie}, wait_timeout=10)
            wait_until(lambda: client.transport() == "websocket", timeout=10, message="the upgrade to a WebSocket")
            alice_a, alice_b = a.session_as("alice"), b.session_as("alice")
            assert [mode_of(a), mode_of(b)] == ["normal", "normal"]

            # normal mode: bob's open socket gets it in real time and acknowledges it
            alice_b.post(b.url + "/send", data={"user_id": bob, "title": "Before", "message": "live"}, timeout=10)
            wait_until(lambda: (row(engine, "Before") or {}).get("channel") == "realtime", timeout=15,
                       message="the real-time delivery before the emergency")

            activated = run_cli(tmp_path, "activate-emergency", "--reason", "Critical notification system failure",
                                "--triggered-by", "ops-tester")
            assert activated.returncode == 0, activated.stdout + activated.stderr
            assert "Emergency mode ACTIVE" in activated.stdout
            took = wait_for_mode([a, b], "emergency")
            record_property("emergency_propagation_s", round(took, 4))
            print(f"both servers in emergency mode {took * 1000:.1f} ms after the CLI exited")

            # emergency: server A does not even try the socket it knows bob has (via Redis);
            # bob gets the notification as a flash on his next page, served by B
            assert alice_a.post(a.url + "/send", data={"user_id": bob, "title": "During", "message": "by flash"},
                                timeout=10).status_code in (200, 302)
            during = row(engine, "During")
            assert during is not None and during["attempts"] == 0 and during["realtime_deadline"] is None
            page = wait_until(lambda: (lambda p: p if "During: by flash" in p else None)(
                bob_web.get(b.url + "/", timeout=10).text), timeout=10, message="the flash on bob's page")
            assert flashes(page).count("During: by flash") == 1
            bob_web.get(b.url + "/", timeout=10)  # his next request confirms what the page showed
            assert (row(engine, "During") or {})["channel"] == "flash"
            assert [d["title"] for d in received] == ["Before"]

            deactivated = run_cli(tmp_path, "deactivate-emergency", "--resolved-by", "ops-tester", script=True)
            if deactivated.returncode == 1 and "refusing" in deactivated.stderr:
                deactivated = run_cli(tmp_path, "deactivate-emergency", "--resolved-by", "ops-tester", "--force",
                                      "--reason", "checks fail only in the test environment", script=True)
            assert deactivated.returncode == 0, deactivated.stdout + deactivated.stderr
            took = wait_for_mode([a, b], "normal")
            record_property("normal_propagation_s", round(took, 4))

            alice_b.post(b.url + "/send", data={"user_id": bob, "title": "After", "message": "live again"},
                         timeout=10)
            wait_until(lambda: (row(engine, "After") or {}).get("channel") == "realtime", timeout=15,
                       message="real-time delivery after the emergency")
        finally:
            client.disconnect()
            engine.dispose()

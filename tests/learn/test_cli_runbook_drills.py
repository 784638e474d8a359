"""``execute-drill`` and ``evaluate-drill``: real, reversible failures, measured and restored.

A user keeps polling (as the client script does while its socket is down) in a thread
during the drill; what that user received is what the assertions are about."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from flask_notify_emergency import signals
from flask_notify_emergency.delivery.notifier import EVENT
from tests.conftest import login, user_id
from tests.support.apps import ROOT
from tests.support.cli import audit_rows, event_rows, invoke, invoke_json, stored_switch
from tests.support.pages import NAMESPACE, csrf_from_page, notification_rows, poll, received
from tests.support.services import wait_until

FAST = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5,
        "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.0, "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": 1.0}


@pytest.fixture
def demo(make_app: Any) -> tuple[Any, Any, str]:
    """The example app; alice is the test user who receives the probes."""
    app, socketio = make_app(**FAST)
    app.config["NOTIFY_EMERGENCY_TEST_USER_ID"] = user_id(app, "alice")
    return app, socketio, user_id(app, "alice")


class PollingUser:
    """A logged-in user whose page keeps polling, collecting every notification it gets."""

    def __init__(self, app: Any, name: str) -> None:
        self.client = app.test_client()
        login(self.client, name)
        self.token = csrf_from_page(self.client)
        self.got: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            got = poll(self.client, self.token).get_json()["notifications"]
            if got:  # shown: confirmed, as the client script does
                self.client.post("/emergency/api/notifications/ack", json={"ids": [n["id"] for n in got]},
                                 headers={"X-CSRF-Token": self.token})
            self.got += got
            self._stop.wait(0.05)

    def __enter__(self) -> "PollingUser":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def drill_rows(app: Any) -> list[dict[str, Any]]:
    ext = app.extensions["notify_emergency"]
    t = ext.models.Drill.__table__
    with ext.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def calm(app: Any) -> None:
    """Nothing of a drill is left: real time on, breaker closed, normal mode, no open event."""
    assert not (stored_switch(app, "paused", {}) or {}).get("realtime")
    assert app.extensions["notify_emergency"].breaker.current == "closed"
    assert stored_switch(app, "mode", "normal") == "normal"
    assert all(e["status"] == "resolved" for e in event_rows(app))


def test_websocket_drill_keeps_the_user_informed_by_fallback_and_restores_realtime(demo):
    app, socketio, alice = demo
    with PollingUser(app, "alice") as user:
        sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=user.client)
        code, data = invoke_json(app, "execute-drill", "--type", "websocket_failure", "--duration", "1.5",
                                 "--participants", "admin1,admin2")
        assert code == 0, data
        probe = data["result"]["probe"]
        wait_until(lambda: any(n["id"] == probe["notification_id"] for n in user.got), 10, message="the probe")
    assert [n["id"] for n in user.got].count(probe["notification_id"]) == 1  # exactly once
    assert received(sio, EVENT) == []  # the socket was down for the drill: nothing came that way
    row = next(r for r in notification_rows(app) if r["id"] == probe["notification_id"])
    assert row["delivered"] is True and row["channel"] == "poll"
    calm(app)

    result = data["result"]
    assert result["status"] == "completed" and result["detected"] is True
    assert result["restored"]["all"] is True and result["injected"] == ["realtime"]
    event = next(e for e in event_rows(app) if e["id"] == result["event_id"])
    assert event["evidence"]["drill"] is True and event["evidence"]["drill_id"] == data["id"]
    assert event["failure_type"] == "realtime_connection" and event["status"] == "resolved"
    assert drill_rows(app)[0]["participants"] == ["admin1", "admin2"] and drill_rows(app)[0]["ended_at"]

    # real time is back: a new notification goes over the socket again
    with app.app_context():
        nid = app.extensions["demo"]["notify"].send(alice, "After the drill", "Live again.")
    assert [n["id"] for n in received(sio, EVENT)] == [nid]

    code, scored = invoke_json(app, "evaluate-drill", "--drill-id", data["reference"])
    assert code == 0, scored["evaluation"]
    criteria = {c["name"]: c["ok"] for c in scored["evaluation"]["criteria"]}
    assert criteria == {"completed": True, "detection": True, "recovery": True,
                        "users_kept_receiving": True, "restored": True}
    assert audit_rows(app, "evaluate-drill")[-1]["outcome"] == "ok"
    assert [a["source"] for a in audit_rows(app, "execute-drill")] == ["cli", "cli"]


def test_evaluation_fails_until_the_user_has_the_probe(demo):
    app, _, _ = demo
    code, data = invoke_json(app, "execute-drill", "--type", "notification_failure", "--duration", "0.3",
                             "--participants", "admin1")
    assert code == 0 and data["result"]["injected"] == ["breaker"]
    calm(app)
    early = invoke(app, "evaluate-drill", "--drill-id", str(data["id"]))
    assert early.exit_code == 1 and "has not reached user" in early.output
    page = app.test_client()
    login(page, "alice")
    assert f"Emergency drill #{data['id']}" in page.get("/").get_data(as_text=True)  # flashed on her next page
    page.get("/")  # her next request confirms what the page showed
    late = invoke(app, "evaluate-drill", "--drill-id", str(data["id"]))
    assert late.exit_code == 0 and "5/5 criteria met" in late.output and "once, by flash" in late.output


def test_database_drill_is_simulated_and_never_touches_the_real_database(demo):
    app, _, _ = demo
    code, data = invoke_json(app, "execute-drill", "--type", "database_connectivity", "--duration", "0.3",
                             "--participants", "dba")
    assert code == 0
    evidence = event_rows(app)[-1]["evidence"]["database"]
    assert evidence["simulated"] is True and evidence["failed"] is True and "unable to open" in evidence["error"]
    calm(app)
    assert data["result"]["probe"]["notification_id"] in [r["id"] for r in notification_rows(app)]


def test_complete_rollback_drill_rehearses_on_a_copy(demo):
    app, _, _ = demo
    code, data = invoke_json(app, "execute-drill", "--type", "complete_rollback", "--duration", "0.3",
                             "--participants", "admin1")
    assert code == 0 and data["result"]["rollback_rehearsal"]["ok"] is True
    calm(app)
    assert stored_switch(app, "mode") == "normal"  # the rehearsal rolled back the copy only


def test_dry_run_shows_the_plan_and_changes_nothing(demo):
    app, _, _ = demo
    result = invoke(app, "execute-drill", "--type", "multi_component", "--duration", "300",
                    "--participants", "admin1", "--dry-run")
    assert result.exit_code == 0
    assert "pause real-time delivery" in result.output and "trip the circuit breaker" in result.output
    assert "ready to run." in result.output
    assert drill_rows(app) == [] and event_rows(app) == [] and audit_rows(app, "execute-drill") == []
    calm(app)


def test_a_drill_is_refused_during_a_real_emergency(demo):
    app, _, _ = demo
    invoke(app, "activate-emergency", "--reason", "real outage")
    result = invoke(app, "execute-drill", "--type", "websocket_failure", "--duration", "1", "--participants", "a")
    assert result.exit_code == 1 and "a real emergency is in progress" in result.output
    assert drill_rows(app) == [] and not (stored_switch(app, "paused", {}) or {}).get("realtime")


def test_a_failure_mid_drill_still_restores_everything(demo):
    app, _, _ = demo

    def broken_pager(sender: Any, event: dict[str, Any], **_: Any) -> None:
        raise RuntimeError("pager service down")

    signals.emergency_detected.connect(broken_pager, sender=app)
    try:
        code, data = invoke_json(app, "execute-drill", "--type", "multi_component", "--duration", "5",
                                 "--participants", "a")
    finally:
        signals.emergency_detected.disconnect(broken_pager, sender=app)
    assert code == 1
    assert data["result"]["status"] == "failed" and "pager service down" in data["result"]["error"]
    assert data["result"]["restored"]["all"] is True
    calm(app)


@pytest.mark.parametrize("args, complaint", [
    (["--type", "meteor", "--participants", "a"], "'meteor' is not one of"),
    (["--type", "websocket_failure", "--duration", "-1", "--participants", "a"], "is not in the range"),
    (["--type", "websocket_failure", "--duration", "7200", "--participants", "a"], "is not in the range"),
    (["--type", "websocket_failure", "--participants", " , "], "--participants is required"),
    (["--type", "websocket_failure", "--participants", "a", "--probe-user", "424242"], "no such user '424242'"),
])
def test_execute_drill_bad_input(demo, args, complaint):
    app, _, _ = demo
    result = invoke(app, "execute-drill", *args)
    assert result.exit_code == 2 and complaint in result.output
    assert drill_rows(app) == []


@pytest.mark.parametrize("ref, complaint", [
    ("17", "no drill #17"), ("drill_2025", "is not a valid drill id"), ("emergency_20250830_001", "is not a valid drill id"),
])
def test_evaluate_drill_bad_id(demo, ref, complaint):
    app, _, _ = demo
    result = invoke(app, "evaluate-drill", "--drill-id", ref)
    assert result.exit_code == 2 and complaint in result.output


CTRL_C_DRILL = """
import json, os, sys
sys.path.insert(0, os.getcwd())
from flask.cli import ScriptInfo
from tests.support.apps import build_example
app, _ = build_example(json.loads(os.environ["DRILL_CONFIG"]))
app.cli.main(["emergency", "execute-drill", "--type", "multi_component", "--duration", "600",
              "--participants", "admin1", "--probe-user", "2"], prog_name="flask",
             obj=ScriptInfo(create_app=lambda: app))
"""


@pytest.mark.slow
def test_ctrl_c_aborts_the_drill_and_restores_everything(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'drill.sqlite'}"
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=url)
    env = dict(os.environ, DRILL_CONFIG=json.dumps({"SQLALCHEMY_DATABASE_URI": url, **FAST}))
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_DRILL], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: any(e["status"] == "open" for e in event_rows(app)), 30, message="the drill's event")
        # the drill is under way once it has stored its probe; Ctrl-C comes while it runs
        wait_until(lambda: drill_rows(app) and (drill_rows(app)[-1]["result"] or {}).get("probe"), 30,
                   message="the drill to send its probe")
        assert (stored_switch(app, "paused", {}) or {}).get("realtime") is True
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, output.decode()
    drill = drill_rows(app)[-1]
    assert drill["result"]["status"] == "aborted" and drill["ended_at"] is not None
    assert drill["result"]["restored"]["all"] is True, (drill["result"], output.decode())
    calm(app)
    assert app.extensions["notify_emergency"].control.read("breaker")["state"] == "closed"


@pytest.mark.slow
def test_a_drill_killed_with_sigkill_is_reverted_by_the_next_monitor_tick(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'drill.sqlite'}"
    config = {"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_MONITOR_INTERVAL": 1.0, **FAST}
    app, _ = make_app(**config)
    ext = app.extensions["notify_emergency"]
    env = dict(os.environ, DRILL_CONFIG=json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_DRILL], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: drill_rows(app) and (drill_rows(app)[-1]["result"] or {}).get("probe"), 30,
                   message="the drill to be under way")
        assert (stored_switch(app, "paused", {}) or {}).get("realtime") is True
        assert ext.breaker.current == "open"
        proc.kill()  # no finally runs: nothing of the drill's own restore happens
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # still injected; while the lease runs, the monitor leaves the drill alone
    assert ext.monitor.tick() and (stored_switch(app, "paused", {}) or {}).get("realtime") is True
    lease = stored_switch(app, "drill_lease")
    assert lease["drill_id"] == drill_rows(app)[-1]["id"] and set(lease["injected"]) >= {"realtime", "breaker"}
    # once it has run out, the next tick reverts everything the drill injected
    wait_until(lambda: ext.monitor.tick() and stored_switch(app, "drill_lease") is None, timeout=30,
               interval=0.5, message="the monitor to revert the abandoned drill")
    calm(app)
    drill = drill_rows(app)[-1]
    assert drill["result"]["status"] == "abandoned" and drill["result"]["reverted_by"] == "monitor"
    assert drill["ended_at"] is not None
    assert [r["outcome"] for r in audit_rows(app, "revert-abandoned-drill")] == ["ok"]

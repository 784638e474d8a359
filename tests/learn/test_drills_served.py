"""Drills inject real faults into served workers, and the real monitor must find them.

One served app (a real server process with its monitor thread) on PostgreSQL, with a private
redis-server as both its Socket.IO message queue and its shared state. The drill runs here,
in a ``flask emergency`` process of its own (this test's app: no workers, no monitor), so
only the served process is cut; what the served monitor records is what is asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, Iterator

import pytest
import requests
import socketio
import sqlalchemy as sa

from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from tests.support.apps import ROOT, ServedApp, build_example, drop_tables
from tests.support.cli import audit_rows, event_rows, invoke, invoke_json, stored_switch
from tests.support.databases import own_database
from tests.support.outages import PrivateRedis
from tests.support.pages import NAMESPACE
from tests.support.services import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

INTERVAL = 1.0
CANARY = 0.5
CHECK_TIMEOUT = 1.0
SERVED = {"NOTIFY_EMERGENCY_MONITOR_ENABLED": True, "NOTIFY_EMERGENCY_START_ON_BOOT": True,
          "NOTIFY_EMERGENCY_MONITOR_INTERVAL": INTERVAL, "NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER": 2,
          "NOTIFY_EMERGENCY_CANARY_TIMEOUT": CANARY, "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": CHECK_TIMEOUT,
          "NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS": 1, "NOTIFY_EMERGENCY_RECOVERY_BACKOFF": 0.05,
          "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5, "NOTIFY_EMERGENCY_ACK_TIMEOUT": 1.0,
          "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5}


class Cluster:
    """The served app, this process's copy of the app (for commands), and a user's socket."""

    def __init__(self, url: str, redis: PrivateRedis) -> None:
        self.config = {"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_REDIS_URL": redis.url,
                       "SOCKETIO_MESSAGE_QUEUE": redis.url, **SERVED}
        local = dict(self.config, NOTIFY_EMERGENCY_MONITOR_ENABLED=False, NOTIFY_EMERGENCY_START_ON_BOOT=False)
        self.app, _ = build_example(local)  # tables and demo users, before the server starts
        self.ext = self.app.extensions["notify_emergency"]
        with self.ext.engine.connect() as conn:  # bob only sends: the rollback drill's probe user
            bob = str(conn.execute(sa.text("SELECT id FROM demo_user WHERE username = 'bob'")).scalar())
        self.config["NOTIFY_EMERGENCY_TEST_USER_ID"] = self.app.config["NOTIFY_EMERGENCY_TEST_USER_ID"] = bob
        self.server = ServedApp(free_port(), self.config)

    def calm(self, timeout: float = 60) -> None:
        """No open event, no fault, and the monitor's last check passed."""
        def ok() -> bool:
            beat = stored_switch(self.app, "monitor_heartbeat") or {}
            return (beat.get("status") == "healthy" and stored_switch(self.app, "drill_fault") is None
                    and all(e["status"] == "resolved" for e in event_rows(self.app)))
        wait_until(ok, timeout=timeout, interval=0.2, message="a calm cluster (monitor healthy, no event, no fault)")

    def delivers_over_the_socket(self, title: str) -> None:
        """Alice's socket receives a notification bob sends through the served app."""
        sio, got = acking_socket(self.server.url, self.server.session_as("alice"))
        try:
            bob = self.server.session_as("bob")
            with self.ext.engine.connect() as conn:
                alice_id = conn.execute(sa.text("SELECT id FROM demo_user WHERE username = 'alice'")).scalar()
            bob.post(f"{self.server.url}/send", data={"user_id": alice_id, "title": title, "message": "Live."},
                     timeout=10)
            wait_until(lambda: title in got, timeout=15, message=f"{title!r} over alice's socket")
        finally:
            sio.disconnect()

    def stop(self) -> None:
        self.server.stop()
        drop_tables(self.app)


def acking_socket(url: str, session: requests.Session) -> tuple[socketio.Client, list[str]]:
    """A socket of ``session``'s user on ``url`` that acknowledges what it gets; its titles."""
    got: list[str] = []
    sio = socketio.Client(reconnection=False)

    @sio.on(EVENT, namespace=NAMESPACE)
    def on_notification(data: dict[str, Any]) -> None:
        got.append(data.get("title", ""))
        sio.emit(ACK_EVENT, {"id": data["id"]}, namespace=NAMESPACE)

    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    sio.connect(url, headers={"Cookie": cookie}, namespaces=[NAMESPACE], wait_timeout=10)
    return sio, got


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    redis = PrivateRedis()
    try:
        with own_database("postgres") as url:
            served = Cluster(url, redis)
            try:
                yield served
            finally:
                served.stop()
    finally:
        redis.stop()


def detected_action(event: dict[str, Any]) -> dict[str, Any] | None:
    return next((a["detail"] for a in event["actions"] if a["action"] == "detected"), None)


@pytest.mark.parametrize("drill, failure_types", [
    ("websocket_failure", {"realtime_connection"}),
    ("notification_failure", {"realtime_connection"}),
    ("redis_failure", {"shared_state"}),
    ("database_failure", {"database_persistence"}),
    ("multi_component", {"realtime_connection", "shared_state"}),
])
def test_the_monitor_detects_the_injected_fault_and_resolves_it(cluster, drill, failure_types):
    cluster.calm()
    before = {e["id"] for e in event_rows(cluster.app)}
    code, data = invoke_json(cluster.app, "execute-drill", "--type", drill, "--duration", "6",
                             "--participants", "admin1,admin2")
    result = data["result"]
    assert code == 0, json.dumps(result, default=str)[:3000]
    assert result["status"] == "completed" and result["detected"] is True and result["resolved"] is True
    event = next(e for e in event_rows(cluster.app) if e["id"] == result["event_id"])
    assert event["id"] not in before
    assert event["failure_type"] in failure_types, event
    assert (event["triggered_by"], event["status"]) == ("monitor", "resolved")
    assert event["resolved_by"] == "monitor"
    # MTTD: from the failure's start (no traffic: the end of the last passing check) to the
    # monitor's detection; above 0 and within one interval plus the detecting check (one more
    # interval allowed for the tick's own bookkeeping on a loaded machine, as in test_mttd)
    mttd = (event["detected_at"] - event["started_at"]).total_seconds()
    assert result["detection_seconds"] == pytest.approx(mttd, abs=0.001)
    check = detected_action(event)
    check_seconds = check["check_seconds"] if check else CHECK_TIMEOUT + CANARY
    assert 0 < mttd <= INTERVAL + check_seconds + INTERVAL
    assert result["recovery_seconds"] == pytest.approx(
        (event["resolved_at"] - event["detected_at"]).total_seconds(), abs=0.001)
    assert result["recovery_seconds"] > 0
    # the fault is taken back everywhere, and the user's socket gets notifications again
    assert stored_switch(cluster.app, "drill_fault") is None and stored_switch(cluster.app, "drill_lease") is None
    cluster.calm()
    cluster.delivers_over_the_socket(f"After the {drill} drill")

    code, scored = invoke_json(cluster.app, "evaluate-drill", "--drill-id", data["reference"])
    criteria = {c["name"]: c["ok"] for c in scored["evaluation"]["criteria"]}
    assert code == 0 and criteria == {"completed": True, "detected": True, "detection": True, "recovery": True,
                                      "restored": True}, scored["evaluation"]
    assert audit_rows(cluster.app, "evaluate-drill")[-1]["outcome"] == "ok"


def test_a_drill_the_monitor_does_not_detect_fails_and_takes_its_fault_back(cluster):
    cluster.calm()
    control = cluster.ext.control
    control.set_paused("monitor", True, "test")  # the monitor still beats, but checks nothing
    try:
        result = invoke(cluster.app, "execute-drill", "--type", "websocket_failure", "--duration", "2",
                        "--participants", "a")
    finally:
        control.set_paused("monitor", False, "test")
    assert result.exit_code == 1
    assert "not-detected: not detected: the monitor opened no realtime_connection event" in result.output
    assert "Traceback" not in result.output
    assert stored_switch(cluster.app, "drill_fault") is None
    cluster.calm()
    cluster.delivers_over_the_socket("After the undetected drill")


KILLED_DRILL = """
import json, os, sys
sys.path.insert(0, os.getcwd())
from flask.cli import ScriptInfo
from tests.support.apps import build_example
app, _ = build_example(json.loads(os.environ["DRILL_CONFIG"]))
app.cli.main(["emergency", "execute-drill", "--type", os.environ.get("DRILL_TYPE", "websocket_failure"),
              "--duration", "600", "--participants", "admin1"], prog_name="flask",
             obj=ScriptInfo(create_app=lambda: app))
"""


def start_drill(cluster: Cluster, drill_type: str, output: Any = subprocess.DEVNULL) -> subprocess.Popen:
    """``execute-drill --duration 600`` in a process of its own (to be interrupted or killed)."""
    config = dict(cluster.config, NOTIFY_EMERGENCY_MONITOR_ENABLED=False, NOTIFY_EMERGENCY_START_ON_BOOT=False)
    env = dict(os.environ, DRILL_CONFIG=json.dumps(config), DRILL_TYPE=drill_type)
    return subprocess.Popen([sys.executable, "-c", KILLED_DRILL], cwd=ROOT, env=env, stdout=output,
                            stderr=subprocess.STDOUT if output is subprocess.PIPE else subprocess.DEVNULL)


def notification_row(cluster: Cluster, title: str) -> dict[str, Any] | None:
    t = cluster.ext.models.Notification.__table__
    with cluster.ext.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.title == title)).first()
    return dict(row._mapping) if row else None


def test_notification_failure_hangs_emits_while_the_users_socket_stays_connected(cluster):
    """The fault itself, held while the monitor looks away. Alice's socket is on a second
    worker, so bob's notification (sent through the first) must cross the message queue: its
    emit hangs in the black hole until the notifier's limit, the breaker counts the failure,
    and it reaches her by the flash fallback, not her socket, which stays connected; after
    the fault the same socket gets notifications again."""
    cluster.calm()
    second = ServedApp(free_port(), dict(cluster.config, NOTIFY_EMERGENCY_MONITOR_ENABLED=False))
    alice = second.session_as("alice")
    bob = cluster.server.session_as("bob")
    with cluster.ext.engine.connect() as conn:
        alice_id = conn.execute(sa.text("SELECT id FROM demo_user WHERE username = 'alice'")).scalar()
    sio, got = acking_socket(second.url, alice)
    control = cluster.ext.control
    proc = None
    try:
        cluster.delivers_over_the_socket("Before the hang")  # the queue carries emits between workers
        bob.post(f"{cluster.server.url}/send", data={"user_id": alice_id, "title": "Across workers",
                                                     "message": "Live."}, timeout=10)
        wait_until(lambda: "Across workers" in got, timeout=15, message="an emit across the workers")
        control.set_paused("monitor", True, "test")  # the fault lasts: nothing detects it and ends the drill
        proc = start_drill(cluster, "notification_failure", subprocess.PIPE)
        wait_until(lambda: (stored_switch(cluster.app, "drill_fault") or {}).get("faults") == ["message_queue_hang"],
                   timeout=30, message="the drill to inject its fault")
        title = "During the hang"
        bob.post(f"{cluster.server.url}/send", data={"user_id": alice_id, "title": title, "message": "Hung."},
                 timeout=30)
        row = wait_until(lambda: (r := notification_row(cluster, title)) and r["realtime_deadline"] is None and r,
                         timeout=30, message="the notification to fall back")
        assert not row["delivered"] and title not in got and sio.connected
        alice.get(f"{second.url}/", timeout=10)  # her next page shows it (the flash path)
        assert not notification_row(cluster, title)["delivered"]  # offered: the browser has to confirm it
        alice.get(f"{second.url}/", timeout=10)  # the request after carries the page's ack outbox cookie
        row = notification_row(cluster, title)
        assert row["delivered"] and row["channel"] == "flash", row
        assert title not in got and sio.connected
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        assert b"aborted: interrupted (Ctrl-C)" in output, output.decode()
        control.set_paused("monitor", False, "test")
        assert stored_switch(cluster.app, "drill_fault") is None
        cluster.calm()
        bob.post(f"{cluster.server.url}/send", data={"user_id": alice_id, "title": "After the hang",
                                                     "message": "Live."}, timeout=10)
        wait_until(lambda: "After the hang" in got, timeout=15, message="the same socket to get notifications again")
    finally:
        control.set_paused("monitor", False, "test")
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        sio.disconnect()
        second.stop()


def drill_rows(app: Any) -> list[dict[str, Any]]:
    t = app.extensions["notify_emergency"].models.Drill.__table__
    with app.extensions["notify_emergency"].engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def test_a_drill_killed_with_sigkill_is_reverted_once_its_lease_runs_out(cluster):
    cluster.calm()
    config = dict(cluster.config, NOTIFY_EMERGENCY_MONITOR_ENABLED=False, NOTIFY_EMERGENCY_START_ON_BOOT=False)
    env = dict(os.environ, DRILL_CONFIG=json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DRILL], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        drill = wait_until(lambda: [d for d in drill_rows(cluster.app) if d["ended_at"] is None
                                    and (d["result"] or {}).get("fault_started_at")], timeout=30,
                           message="the drill to inject its fault")[-1]
        assert stored_switch(cluster.app, "drill_fault")["drill_id"] == drill["id"]
        proc.kill()  # no finally runs: the drill never takes its fault back itself
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    # the cut worker fails its checks; once the lease runs out the monitor's tick takes the
    # fault back (every worker also drops it at the switch's own expiry)
    wait_until(lambda: stored_switch(cluster.app, "drill_lease") is None, timeout=30, interval=0.2,
               message="the monitor to revert the abandoned drill")
    assert stored_switch(cluster.app, "drill_fault") is None
    row = next(d for d in drill_rows(cluster.app) if d["id"] == drill["id"])
    assert row["result"]["status"] == "abandoned" and row["result"]["reverted_by"] == "monitor" and row["ended_at"]
    assert [r["outcome"] for r in audit_rows(cluster.app, "revert-abandoned-drill")][-1] == "ok"
    cluster.calm()
    cluster.delivers_over_the_socket("After the killed drill")


def test_ctrl_c_takes_the_fault_back(cluster):
    cluster.calm()
    config = dict(cluster.config, NOTIFY_EMERGENCY_MONITOR_ENABLED=False, NOTIFY_EMERGENCY_START_ON_BOOT=False)
    env = dict(os.environ, DRILL_CONFIG=json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DRILL], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: stored_switch(cluster.app, "drill_fault") is not None, timeout=30,
                   message="the drill to inject its fault")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 1, output.decode()
    assert b"aborted: interrupted (Ctrl-C)" in output and b"Traceback" not in output
    assert stored_switch(cluster.app, "drill_fault") is None and stored_switch(cluster.app, "drill_lease") is None
    drill = drill_rows(cluster.app)[-1]
    assert drill["result"]["status"] == "aborted" and drill["result"]["restored"]["all"] is True
    cluster.calm()


def test_complete_rollback_drill_rolls_back_probes_the_fallbacks_and_restores(cluster):
    cluster.calm()
    code, data = invoke_json(cluster.app, "execute-drill", "--type", "complete_rollback", "--duration", "1",
                             "--participants", "admin1")
    result = data["result"]
    assert code == 0, json.dumps([result, event_rows(cluster.app)[-2:]], default=str)[:6000]
    assert result["status"] == "completed" and result["rollback_seconds"] > 0 and result["restore_seconds"] > 0
    assert result["rollback_operation"] and result["restore_operation"]
    probe = result["probe"]
    assert probe["ok"] is True and probe["channel"] == "flash", probe  # the fallback, not the socket
    row = notification_row(cluster, f"Drill #{data['id']}: rollback probe")
    assert row["delivered"] and row["channel"] == "flash" and row["user_id"] == probe["user_id"]
    assert probe["user_id"] == cluster.config["NOTIFY_EMERGENCY_TEST_USER_ID"]
    assert result["realtime_back"] is True, result.get("realtime_detail")
    # the operator's own steps ran, audited; nothing of the drill is left
    assert [r["outcome"] for r in audit_rows(cluster.app, "rollback")][-1] == "ok"
    assert [r["outcome"] for r in audit_rows(cluster.app, "restore")][-1] == "ok"
    assert stored_switch(cluster.app, "drill_lease") is None and stored_switch(cluster.app, "operator_hold") is None
    assert stored_switch(cluster.app, "mode", "normal") == "normal"
    assert not (stored_switch(cluster.app, "paused") or {}).get("realtime")
    cluster.calm()
    cluster.delivers_over_the_socket("After the rollback drill")

    code, scored = invoke_json(cluster.app, "evaluate-drill", "--drill-id", data["reference"])
    criteria = {c["name"]: c["ok"] for c in scored["evaluation"]["criteria"]}
    assert code == 0 and criteria == {"completed": True, "rollback": True, "fallback delivery": True,
                                      "restore": True, "real time back": True, "restored": True}, scored


def test_a_rollback_drill_killed_while_rolled_back_is_restored_by_the_monitor(cluster):
    cluster.calm()
    proc = start_drill(cluster, "complete_rollback")
    try:
        drill = wait_until(lambda: [d for d in drill_rows(cluster.app) if d["ended_at"] is None
                                    and (d["result"] or {}).get("probe")], timeout=60,
                           message="the drill to roll back and probe")[-1]
        assert stored_switch(cluster.app, "mode", "normal") == "legacy"
        assert stored_switch(cluster.app, "drill_lease")["injected"] == ["rollback"]
        proc.kill()  # no finally runs: the drill never restores itself
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    wait_until(lambda: stored_switch(cluster.app, "drill_lease") is None, timeout=60, interval=0.2,
               message="the monitor to restore the abandoned rollback drill")
    row = next(d for d in drill_rows(cluster.app) if d["id"] == drill["id"])
    assert row["result"]["status"] == "abandoned" and row["result"]["restored"]["rollback"] == "done"
    assert stored_switch(cluster.app, "mode", "normal") == "normal"
    assert not (stored_switch(cluster.app, "paused") or {}).get("realtime")
    restores = audit_rows(cluster.app, "restore")
    assert restores[-1]["actor"] == "monitor" and restores[-1]["outcome"] == "ok"
    cluster.calm()
    cluster.delivers_over_the_socket("After the killed rollback drill")

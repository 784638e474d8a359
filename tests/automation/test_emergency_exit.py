"""Emergencies end on evidence: a served app whose users' browsers dropped acknowledgements
goes into emergency mode; once the acknowledgements come back, the monitor's own probes (the
canary and an acknowledged probe notification) end it within HEALTHY_CHECKS_TO_RECOVER
intervals, and neither the failures it left in the delivery history nor the breaker they tripped
open a second emergency."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import requests
import socketio
import sqlalchemy as sa

from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from tests.support.apps import ServedApp
from tests.support.pages import NAMESPACE
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.slow

INTERVAL = 1.0
HEALTHY = 2
#: what one check may take on top of the interval: the canary and the probe's acknowledgement
CHECK_TIME = 2.0
#: a queue outage's end to the emergency's: a check that waits out its canary, the workers'
#: listener test (1 s), HEALTHY checks, with room for a loaded machine
WAKE_BUDGET = 12.0


class Browser:
    """Alice's page: a logged-in session and a socket that acknowledges what it receives,
    except every third notification and every probe while ``dropping``."""

    def __init__(self, url: str) -> None:
        self.http = requests.Session()
        response = self.http.post(f"{url}/login", data={"username": "alice", "password": "alice"},
                                  allow_redirects=False, timeout=10)
        assert response.status_code == 302
        self.dropping = True
        self.seen = 0
        self.dropped = 0
        self.probes = 0
        self.dropped_probes = 0
        self._lock = threading.Lock()
        self.sio = socketio.Client(reconnection=False)

        @self.sio.on(EVENT, namespace=NAMESPACE)
        def on_notification(data: dict[str, Any]) -> None:
            with self._lock:
                self.seen += 1
                if (data.get("data") or {}).get("probe"):
                    self.probes += 1
                if self.dropping and (self.seen % 3 == 0 or (data.get("data") or {}).get("probe")):
                    self.dropped += 1  # and every probe: a failed probe trips a half-open breaker
                    if (data.get("data") or {}).get("probe"):
                        self.dropped_probes += 1
                    return
            self.sio.emit(ACK_EVENT, {"id": data["id"]}, namespace=NAMESPACE)

        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        self.sio.connect(url, headers={"Cookie": cookie}, namespaces=[NAMESPACE], wait_timeout=10)


def rows(engine: sa.engine.Engine, sql: str) -> list[dict[str, Any]]:
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql))]
    except sa.exc.OperationalError:
        return []


def mode(engine: sa.engine.Engine) -> str:
    found = rows(engine, "SELECT value FROM notify_emergency_control WHERE key = 'mode'")
    return json.loads(found[0]["value"]) if found else "normal"


def stop_all(alice: Any, server: Any, queue: Any, engine: sa.engine.Engine) -> None:
    """Close the page's socket, the served app, the private queue Redis and the engine."""
    if alice is not None and alice.sio.connected:
        alice.sio.disconnect()
    server.stop()
    queue.stop()
    engine.dispose()


def breaker(engine: sa.engine.Engine) -> str:
    found = rows(engine, "SELECT value FROM notify_emergency_control WHERE key = 'breaker'")
    return str(json.loads(found[0]["value"])["state"]) if found else "closed"


def test_dropped_acks_end_in_an_emergency_that_probes_close_and_no_second_one(tmp_path):
    db = f"sqlite:///{tmp_path / 'acks.sqlite'}"
    config = {"SQLALCHEMY_DATABASE_URI": db, "NOTIFY_EMERGENCY_MONITOR_ENABLED": True,
              "NOTIFY_EMERGENCY_START_ON_BOOT": True, "NOTIFY_EMERGENCY_MONITOR_INTERVAL": INTERVAL,
              "NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER": HEALTHY, "NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5,
              "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5, "NOTIFY_EMERGENCY_DELIVERY_MIN_SAMPLE": 9,
              "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.0, "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": 1.0,
              "NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS": 1, "NOTIFY_EMERGENCY_RECOVERY_BACKOFF": 0.05,
              # the lost acks trip the breaker, which by itself would stay open past the test
              "NOTIFY_EMERGENCY_BREAKER_MIN_CALLS": 6, "NOTIFY_EMERGENCY_BREAKER_FAILURE_RATE": 0.25,
              "NOTIFY_EMERGENCY_BREAKER_OPEN_SECONDS": 600.0}
    engine = sa.create_engine(db)
    with ServedApp(free_port(), config) as server:
        alice = Browser(server.url)
        bob = requests.Session()
        assert bob.post(f"{server.url}/login", data={"username": "bob", "password": "bob"},
                        allow_redirects=False, timeout=10).status_code == 302
        alice_id = rows(engine, "SELECT id FROM demo_user WHERE username = 'alice'")[0]["id"]
        try:
            for n in range(12):  # every third acknowledgement is lost: 33% fail
                bob.post(f"{server.url}/send", data={"user_id": alice_id, "title": f"Update {n}",
                                                     "message": "Your report is ready."}, timeout=10)
            event = wait_until(lambda: rows(engine, "SELECT * FROM notify_emergency_event WHERE status = 'open'"),
                               timeout=30, message="the monitor to open an emergency for the lost acks")[0]
            assert (event["failure_type"], event["triggered_by"]) == ("message_delivery", "monitor")
            wait_until(lambda: mode(engine) == "emergency", timeout=10, message="emergency mode")
            assert alice.dropped >= 3
            # the recovery plan half-opens the breaker; the monitor's failed probe trips it again
            wait_until(lambda: alice.dropped_probes >= 1 and breaker(engine) == "open", timeout=10,
                       message="a lost probe to trip the breaker")

            with alice._lock:
                alice.dropping = False  # the cause stops; real time stays paused by emergency mode
            wait_until(lambda: rows(engine, f"SELECT * FROM notify_emergency_event WHERE id = {event['id']} "
                                            "AND status = 'resolved'"),
                       timeout=HEALTHY * INTERVAL + CHECK_TIME,
                       message=f"the emergency to end within {HEALTHY} intervals of the cause stopping")
            assert mode(engine) == "normal" and alice.probes >= HEALTHY
            # the probes showed the path delivers: the breaker closed with the emergency, or the
            # next check would find it open and start an emergency of the recovery's own making
            wait_until(lambda: breaker(engine) == "closed", timeout=INTERVAL,
                       message="the breaker to close with the emergency")
            resolved = rows(engine, f"SELECT resolved_by FROM notify_emergency_event WHERE id = {event['id']}")
            assert resolved[0]["resolved_by"] == "monitor"
            # the old failures are still in ACTIVITY_WINDOW; three more checks open nothing new
            beats: set[Any] = set()

            def three_more_checks() -> bool:
                found = rows(engine, "SELECT value FROM notify_emergency_control WHERE key = 'monitor_heartbeat'")
                beat = json.loads(found[0]["value"]) if found else {}
                if beat.get("tick_at"):
                    beats.add(beat["tick_at"])
                return len(beats) >= 4

            wait_until(three_more_checks, timeout=10 * INTERVAL, message="three more monitor checks")
            assert len(rows(engine, "SELECT id FROM notify_emergency_event")) == 1
            assert mode(engine) == "normal"
            probe_rows = rows(engine, "SELECT id FROM notify_emergency_notification WHERE category = 'probe'")
            assert probe_rows == []  # probes leave nothing behind for the user
        finally:
            alice.sio.disconnect()
    engine.dispose()


@pytest.mark.redis
def test_restart_websockets_wakes_a_queue_listener_asleep_in_its_backoff(tmp_path, redis_url, redis_prefix):
    """After a queue outage python-socketio's listener sleeps in a growing back-off while
    Redis already answers; the worker's own recovery action replaces it at once, so its
    canary passes instead of failing (and opening a new emergency) for the rest of the sleep."""
    import os
    import subprocess
    import sys

    from tests.support.apps import ROOT
    from tests.support.outages import PrivateRedis

    queue = PrivateRedis()
    db = f"sqlite:///{tmp_path / 'wake.sqlite'}"
    config = {"SQLALCHEMY_DATABASE_URI": db, "SOCKETIO_MESSAGE_QUEUE": queue.url,
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.0, "NOTIFY_EMERGENCY_START_ON_BOOT": True}
    (tmp_path / "cli_app.py").write_text("from tests.support.apps import build_example\n"
                                         f"app, socketio = build_example({config!r})\n")
    engine = sa.create_engine(db)
    server = ServedApp(free_port(), config, collect_output=True)
    alice = None
    try:
        alice = Browser(server.url)  # an open page: the worker's queue listener is running
        queue.kill()
        # the listener has failed four times: it now sleeps 8 s, whatever Redis does meanwhile
        wait_until(lambda: any("retrying in 8 secs" in line for line in server.output), timeout=30,
                   message="the served worker's queue listener to back off for 8 s")
        queue.start()
        flask = os.path.join(os.path.dirname(sys.executable), "flask")
        done = subprocess.run([flask, "--app", "cli_app", "emergency", "restart-websockets", "--json"],
                              cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

        def workers_restart() -> dict[str, Any] | None:
            found = rows(engine, "SELECT outcome, detail FROM notify_emergency_audit "
                                 "WHERE action = 'restart-websockets' AND source = 'cluster'")
            return found[0] if found else None

        entry = wait_until(workers_restart, timeout=5, message="the serving worker to restart its real-time layer")
        detail = json.loads(entry["detail"])
        assert detail["steps"]["listener"].startswith("replaced"), detail
        assert entry["outcome"] == "ok" and detail["steps"]["canary"]["listener"] == "hears the queue"
    finally:
        stop_all(alice, server, queue, engine)


@pytest.mark.redis
def test_the_monitor_wakes_queue_listeners_so_a_queue_outage_ends_with_its_cause(tmp_path, redis_url,
                                                                                   redis_prefix):
    """The Redis message queue dies long enough for python-socketio's listener to back off for
    16 s. Once the queue answers again, the monitor asks every worker to wake its listener, so
    the emergency ends within HEALTHY_CHECKS_TO_RECOVER intervals (and the wake-up), not when
    the back-off runs out."""
    from tests.support.outages import PrivateRedis

    queue = PrivateRedis()
    db = f"sqlite:///{tmp_path / 'queue.sqlite'}"
    config = {"SQLALCHEMY_DATABASE_URI": db, "SOCKETIO_MESSAGE_QUEUE": queue.url,
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_MONITOR_ENABLED": True, "NOTIFY_EMERGENCY_START_ON_BOOT": True,
              "NOTIFY_EMERGENCY_MONITOR_INTERVAL": INTERVAL, "NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER": HEALTHY,
              "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.0, "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": 1.0,
              "NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS": 1, "NOTIFY_EMERGENCY_RECOVERY_BACKOFF": 0.05}
    engine = sa.create_engine(db)
    server = ServedApp(free_port(), config, collect_output=True)
    alice = None
    try:
        alice = Browser(server.url)
        alice.dropping = False
        queue.kill()
        event = wait_until(lambda: rows(engine, "SELECT * FROM notify_emergency_event WHERE status = 'open'"),
                           timeout=30, message="the monitor to open an emergency for the dead queue")[0]
        assert event["failure_type"] == "realtime_connection"
        wait_until(lambda: any("retrying in 16 secs" in line for line in server.output), timeout=60,
                   message="the served worker's queue listener to back off for 16 s")
        queue.start()
        # what the promise allows plus the wake-up: the first check after the queue's return waits
        # out its canary, the worker tests its listener, then HEALTHY checks; the back-off alone
        # would take 16 s
        wait_until(lambda: rows(engine, f"SELECT id FROM notify_emergency_event WHERE id = {event['id']} "
                                        "AND status = 'resolved'"),
                   timeout=WAKE_BUDGET, message="the emergency to end long before the listener's back-off would")
        woke = rows(engine, "SELECT outcome, detail FROM notify_emergency_audit "
                            "WHERE action = 'wake-queue-listener' AND source = 'cluster'")
        assert any(json.loads(w["detail"])["listener"].startswith("replaced") for w in woke), woke
    finally:
        stop_all(alice, server, queue, engine)

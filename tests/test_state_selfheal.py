"""Self-healing shared state: the shared Redis restarted empty under a served app with an open
socket. The worker re-publishes its live sockets (also one that connected while Redis was
down) and re-seeds pending markers, so the next notification reaches the open socket, with
no reconnect, and an operator's ``status`` counts the users as connected. And a Redis frozen for
a while, then answering again, is found healthy again by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
import redis as redis_lib
import requests
import socketio
import sqlalchemy as sa

from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from tests.support.apps import ROOT, ServedApp
from tests.support.outages import PrivateRedis
from tests.support.pages import NAMESPACE
from tests.support.services import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]

PREFIX = "ne-selfheal"
#: what the issue promises: the next notification over the socket that stayed open
DELIVERY_DEADLINE = 3.0


class Page:
    """A logged-in page with its socket; acknowledges what it receives."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.http = requests.Session()
        assert self.http.post(f"{url}/login", data={"username": name, "password": name},
                              allow_redirects=False, timeout=10).status_code == 302
        self.received: list[dict[str, Any]] = []
        self.connects = 0
        self._lock = threading.Lock()
        self.sio = socketio.Client(reconnection=False)

        @self.sio.on("connect", namespace=NAMESPACE)
        def on_connect() -> None:
            self.connects += 1

        @self.sio.on(EVENT, namespace=NAMESPACE)
        def on_notification(data: dict[str, Any]) -> None:
            with self._lock:
                self.received.append(data)
            self.sio.emit(ACK_EVENT, {"id": data["id"]}, namespace=NAMESPACE)

    def connect(self) -> str:
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        self.sio.connect(self.url, headers={"Cookie": cookie}, namespaces=[NAMESPACE], wait_timeout=10)
        return str(self.sio.get_sid(namespace=NAMESPACE))

    def titles(self) -> list[str]:
        with self._lock:
            return [n["title"] for n in self.received]


def status(workdir: Any) -> dict[str, Any]:
    """``flask emergency status --json`` in its own process, as an operator runs it."""
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    done = subprocess.run([flask, "--app", "cli_app", "emergency", "status", "--json"], cwd=workdir,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_redis_restarted_empty_the_open_socket_gets_the_next_notification(tmp_path):
    shared = PrivateRedis()
    db = f"sqlite:///{tmp_path / 'heal.sqlite'}"
    config = {"SQLALCHEMY_DATABASE_URI": db, "NOTIFY_EMERGENCY_REDIS_URL": shared.url,
              "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": PREFIX, "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 60.0,
              "NOTIFY_EMERGENCY_ACK_TIMEOUT": 5.0}
    (tmp_path / "cli_app.py").write_text("from tests.support.apps import build_example\n"
                                         f"app, socketio = build_example({config!r})\n")
    engine = sa.create_engine(db)
    client = redis_lib.Redis.from_url(shared.url)
    server = ServedApp(free_port(), config)
    alice, bob = Page(server.url, "alice"), Page(server.url, "bob")
    try:
        with engine.connect() as conn:
            alice_id = conn.execute(sa.text("SELECT id FROM demo_user WHERE username = 'alice'")).scalar()
        sid = alice.connect()
        assert status(tmp_path)["connected_users"] == 1

        shared.kill()
        bob.connect()  # a socket that connects while Redis is down
        shared.start()  # same port, nothing in it
        registry = wait_until(
            lambda: (h := client.hgetall(f"{PREFIX}:connections")) and len(h) == 2 and h, timeout=15,
            message="the worker to re-publish its sockets to the empty Redis")
        assert {int(v) for v in registry.values()} == {1}

        response = bob.http.post(f"{server.url}/send", data={"user_id": alice_id, "title": "After the restart",
                                                             "message": "Still live."},
                                 allow_redirects=False, timeout=10)
        assert response.status_code == 302
        wait_until(lambda: "After the restart" in alice.titles(), timeout=DELIVERY_DEADLINE,
                   message="the notification over the socket that stayed open")
        assert alice.sio.get_sid(namespace=NAMESPACE) == sid and alice.connects == 1  # no reconnect

        def channel() -> Any:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT channel FROM notify_emergency_notification "
                                            "WHERE title = 'After the restart'")).scalar()

        wait_until(lambda: channel() == "realtime", timeout=5, message="the acknowledgement to mark it delivered")
        assert status(tmp_path)["connected_users"] == 2
    finally:
        for page in (alice, bob):
            if page.sio.connected:
                page.sio.disconnect()
        server.stop()
        client.close()
        shared.stop()
        engine.dispose()


def test_redis_frozen_then_answering_again_is_healthy_again_by_itself(make_app, tmp_path):
    """A call that timed out while Redis was frozen marks it unreachable; the listener's own
    subscription lives through the freeze, and once Redis answers the state is healthy again
    and changes spread through Redis, with nothing else happening."""
    from tests.support.outages import PrivateRedis as OwnRedis

    shared = OwnRedis()
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'frozen.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": shared.url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": PREFIX,
              "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 60.0, "NOTIFY_EMERGENCY_MONITOR_ENABLED": False}
    try:
        one, _ = make_app(**config)
        two, _ = make_app(**config)
        ext_one, ext_two = one.extensions["notify_emergency"], two.extensions["notify_emergency"]
        assert ext_one.state.healthy and ext_two.state.healthy
        shared.freeze()
        try:
            ext_one.state.mark_pending("someone")  # its publish times out
            wait_until(lambda: not ext_one.state.healthy, timeout=10, message="the worker to mark Redis unreachable")
        finally:
            shared.thaw()
        wait_until(lambda: ext_one.state.healthy, timeout=5, interval=0.1,
                   message="the worker to find Redis answering again")
        with one.app_context():
            ext_one.control.set_mode("emergency", "test")
        # through Redis, not the database refresh (60 s)
        wait_until(lambda: ext_two.control.mode == "emergency", timeout=5, interval=0.1,
                   message="the mode to spread through Redis again")
    finally:
        shared.stop()

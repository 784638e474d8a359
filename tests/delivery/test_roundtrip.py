"""A real round trip: the example app served on loopback, a python-socketio client logged in
over HTTP, the notification sent through the app's own form, acknowledged over the socket.

Served three ways: by pytest-flask's ``live_server`` (the development server, forked from the
test's own ``app``), and by gunicorn with threaded and with gevent workers (``ServedApp``)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any, Iterator, Protocol

import pytest
import requests
import socketio
import sqlalchemy as sa

from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from tests.support.apps import ServedApp
from tests.support.pages import NAMESPACE, client_settings, flashes
from tests.support.services import free_port, wait_until

CONFIG = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5,
          "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5}


class Served(Protocol):
    url: str


class User:
    """One person using the served app: a browser session over HTTP and a socket."""

    def __init__(self, served: Served, name: str) -> None:
        self.url = served.url
        self.http = requests.Session()
        response = self.http.post(f"{self.url}/login", data={"username": name, "password": name},
                                  allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        self.received: list[dict[str, Any]] = []
        self.sio: socketio.Client | None = None
        self._lock = threading.Lock()

    def connect(self) -> socketio.Client:
        sio = socketio.Client(reconnection=False)

        @sio.on(EVENT, namespace=NAMESPACE)
        def on_notification(data: dict[str, Any]) -> None:
            with self._lock:
                self.received.append(data)

        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        sio.connect(self.url, headers={"Cookie": cookie}, namespaces=[NAMESPACE], wait_timeout=10)
        # polling first, then the upgrade: the WebSocket works under every server
        wait_until(lambda: sio.transport() == "websocket", timeout=10, message="the upgrade to a WebSocket")
        self.sio = sio
        return sio

    def page(self, path: str = "/") -> str:
        response = self.http.get(self.url + path, timeout=10)
        assert response.status_code == 200
        return response.text

    def send_form(self, to: str, title: str, message: str, way: str = "send") -> None:
        """The demo's own send form (what a person clicking "Send" does); ``way="send_many"``
        sends it through ``notify.send_many()``."""
        who = {"user_ids": to} if way == "send_many" else {"user_id": to}
        response = self.http.post(f"{self.url}/send", data=dict(who, title=title, message=message),
                                  allow_redirects=False, timeout=10)
        assert response.status_code == 302
        assert flashes(self.page()) == ["Sent."]

    def poll(self, token: str) -> list[dict[str, Any]]:
        response = self.http.post(f"{self.url}/emergency/api/notifications/poll", json={},
                                  headers={"X-CSRF-Token": token}, timeout=10)
        assert response.status_code == 200
        return list(response.json()["notifications"])

    def ack(self, token: str, ids: list[int]) -> list[int]:
        """Confirm what a poll showed, as the client script does when its socket is down."""
        response = self.http.post(f"{self.url}/emergency/api/notifications/ack", json={"ids": ids},
                                  headers={"X-CSRF-Token": token}, timeout=10)
        assert response.status_code == 200
        return list(response.json()["acknowledged"])

    def close(self) -> None:
        if self.sio is not None and self.sio.connected:
            self.sio.disconnect()
        self.http.close()


@pytest.fixture(params=["send", "send_many"])
def way(request: pytest.FixtureRequest) -> str:
    """Each round trip runs with ``notify.send()`` and with ``notify.send_many()``."""
    return str(request.param)


@pytest.fixture
def app(make_app: Any, tmp_path: Any) -> Any:
    """pytest-flask's application: the example app that ``live_server`` forks and serves."""
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'served.sqlite'}", **CONFIG)
    with app.app_context():  # the served child opens its own connections to the file
        app.extensions["demo"]["db"].engine.dispose()
    return app


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Any, server_kind: str) -> Iterator[tuple[Served, sa.engine.Engine]]:
    db = tmp_path / "served.sqlite"
    engine = sa.create_engine(f"sqlite:///{db}")
    if server_kind == "werkzeug":
        live = request.getfixturevalue("live_server")  # asked for here, so no request context is pushed
        try:
            yield SimpleNamespace(url=live.url()), engine
        finally:
            engine.dispose()
        return
    server = ServedApp(free_port(), {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{db}", **CONFIG}, server=server_kind)
    try:
        yield server, engine
    finally:
        server.stop()
        engine.dispose()


def user_ids(engine: sa.engine.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {name: str(uid) for uid, name in conn.execute(sa.text("SELECT id, username FROM demo_user"))}


def rows(engine: sa.engine.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(sa.text(
            "SELECT id, user_id, title, delivered, channel FROM notify_emergency_notification ORDER BY id"))
        return [dict(r._mapping) for r in result]


def test_notification_arrives_over_the_socket_and_the_ack_marks_it_delivered(served, way):
    app, engine = served
    alice, admin = User(app, "alice"), User(app, "admin")
    try:
        sio = alice.connect()
        admin.send_form(user_ids(engine)["alice"], "Report ready", "Your monthly report is ready.", way)

        wait_until(lambda: alice.received, timeout=10, message="the notification over the socket")
        (note,) = alice.received
        assert (note["title"], note["message"]) == ("Report ready", "Your monthly report is ready.")
        assert rows(engine)[0]["delivered"] in (0, False)  # emitted, not yet acknowledged

        answer = sio.call(ACK_EVENT, {"id": note["id"]}, namespace=NAMESPACE, timeout=10)
        assert answer == {"ok": True, "acknowledged": [note["id"]]}
        (row,) = rows(engine)
        assert (row["id"], bool(row["delivered"]), row["channel"]) == (note["id"], True, "realtime")
        # delivered over the socket: no flash and no poll result afterwards
        page = alice.page()
        assert flashes(page) == []
        assert alice.poll(client_settings(page)["csrfToken"]) == []
    finally:
        alice.close()
        admin.close()


def test_without_the_ack_the_notification_arrives_by_the_fallback_exactly_once(served, way):
    app, engine = served
    alice, admin = User(app, "alice"), User(app, "admin")
    try:
        alice.connect()  # receives, but never acknowledges
        admin.send_form(user_ids(engine)["alice"], "Report ready", "Your monthly report is ready.", way)
        wait_until(lambda: alice.received, timeout=10, message="the notification over the socket")

        shown = wait_until(lambda: flashes(alice.page()), timeout=10, interval=0.2,
                           message="the unacknowledged notification as a flash")
        assert shown == ["Report ready: Your monthly report is ready."]
        page = alice.page()
        assert flashes(page) == []
        assert alice.poll(client_settings(page)["csrfToken"]) == []
        (row,) = rows(engine)
        assert (bool(row["delivered"]), row["channel"]) == (True, "flash")
    finally:
        alice.close()
        admin.close()


def test_without_the_ack_an_open_page_gets_it_by_polling_exactly_once(served, way):
    app, engine = served
    alice, admin = User(app, "alice"), User(app, "admin")
    try:
        token = client_settings(alice.page())["csrfToken"]
        alice.connect()
        admin.send_form(user_ids(engine)["alice"], "Build failed", "main is red.", way)
        wait_until(lambda: alice.received, timeout=10, message="the notification over the socket")

        got = wait_until(lambda: alice.poll(token), timeout=10, interval=0.2,
                         message="the unacknowledged notification through the poll")
        assert [(n["id"], n["title"]) for n in got] == [(alice.received[0]["id"], "Build failed")]
        assert alice.poll(token) == []
        assert flashes(alice.page()) == []
        assert rows(engine)[0]["delivered"] in (False, 0)  # offered, until the page confirms it
        assert alice.ack(token, [got[0]["id"]]) == [got[0]["id"]]
        assert (bool(rows(engine)[0]["delivered"]), rows(engine)[0]["channel"]) == (True, "poll")
    finally:
        alice.close()
        admin.close()


def test_a_user_without_a_socket_gets_it_on_the_next_page(served, way):
    app, engine = served
    bob, admin = User(app, "bob"), User(app, "admin")
    try:
        admin.send_form(user_ids(engine)["bob"], "Hello", "From the admin.", way)
        assert flashes(bob.page()) == ["Hello: From the admin."]
        assert flashes(bob.page()) == []
        assert bob.received == []
    finally:
        bob.close()
        admin.close()

"""Admin rights are re-checked where they are used: the dashboard's live namespace loads the
user afresh before every push. Served app on loopback, real python-socketio clients: a
demoted admin's open dashboard socket gets nothing more and is disconnected, and so is the
socket of a session that logged out, while another admin's socket keeps getting pushes."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
import requests
import socketio
import sqlalchemy as sa

from flask_notify_emergency.views.admin_realtime import OVERVIEW_EVENT
from tests.support.apps import ServedApp
from tests.support.pages import client_settings
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.slow  # a served app process

ADMIN_NS = "/notify-emergency-admin"
#: Pushes come only when something changes (a banner posted), never on a timer, so the test
#: knows exactly which push each socket should or should not get.
CONFIG = {"NOTIFY_EMERGENCY_DASHBOARD_REFRESH_SECONDS": 3600}


class Dashboard:
    """An admin's browser session with the dashboard open: HTTP, and its live socket."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.http = requests.Session()
        answer = self.http.post(f"{url}/login", data={"username": name, "password": name}, allow_redirects=False)
        assert answer.status_code == 302
        assert self.http.get(f"{url}/emergency/").status_code == 200, f"{name} cannot open the dashboard"
        self.token = client_settings(self.http.get(f"{url}/").text)["csrfToken"]
        self.overviews: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on(OVERVIEW_EVENT, self.overviews.append, namespace=ADMIN_NS)
        self.sio.on("disconnect", self.disconnected.set, namespace=ADMIN_NS)
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        self.sio.connect(url, headers={"Cookie": cookie}, namespaces=[ADMIN_NS], wait_timeout=10)

    def post_banner(self, message: str) -> None:
        answer = self.http.post(f"{self.url}/emergency/api/banners/admin", json={"message": message},
                                headers={"X-CSRF-Token": self.token})
        assert answer.status_code == 200, answer.text

    def pushed(self, message: str) -> bool:
        """Has a push arrived that was sent after the banner ``message`` was posted?"""
        return any(message in str(o["overview"]) for o in self.overviews)

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


@pytest.fixture
def served(tmp_path: Any) -> Iterator[tuple[str, sa.engine.Engine]]:
    db = tmp_path / "dash.sqlite"
    app = ServedApp(free_port(), {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{db}", **CONFIG})
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:  # bob is an admin too, until the test says otherwise
            conn.execute(sa.text("UPDATE demo_user SET is_admin = 1 WHERE username = 'bob'"))
        yield app.url, engine
    finally:
        engine.dispose()
        app.stop()


def set_admin(engine: sa.engine.Engine, name: str, admin: bool) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE demo_user SET is_admin = :a WHERE username = :n"), {"a": admin, "n": name})


def test_a_demoted_admins_open_dashboard_gets_nothing_more_and_is_disconnected(served):
    url, engine = served
    admin, bob = Dashboard(url, "admin"), Dashboard(url, "bob")
    try:
        admin.post_banner("first banner")  # both are admins: both get the push
        wait_until(lambda: admin.pushed("first banner") and bob.pushed("first banner"), timeout=15,
                   message="both dashboards to get the first push")

        set_admin(engine, "bob", False)
        admin.post_banner("second banner")
        wait_until(lambda: admin.pushed("second banner"), timeout=15,
                   message="the remaining admin to get the second push")
        assert bob.disconnected.wait(15), "the demoted admin's socket was left open"
        assert not bob.pushed("second banner"), "the demoted admin still got the overview"

        # and the socket stays shut: connecting again is refused
        retry = socketio.Client(reconnection=False)
        cookie = "; ".join(f"{k}={v}" for k, v in bob.http.cookies.items())
        with pytest.raises(socketio.exceptions.ConnectionError):
            retry.connect(url, headers={"Cookie": cookie}, namespaces=[ADMIN_NS], wait_timeout=10)
    finally:
        admin.close()
        bob.close()


def test_logging_out_closes_that_sessions_dashboard_socket_only(served):
    url, _ = served
    admin, other_tab_session = Dashboard(url, "admin"), Dashboard(url, "bob")
    leaving = Dashboard(url, "bob")
    try:
        assert leaving.http.get(f"{url}/logout", allow_redirects=False).status_code == 302
        assert leaving.disconnected.wait(15), "the logged-out session's dashboard socket was left open"
        admin.post_banner("after logout")
        wait_until(lambda: admin.pushed("after logout") and other_tab_session.pushed("after logout"), timeout=15,
                   message="the other sessions' dashboards to keep getting pushes")
        assert not leaving.pushed("after logout")
        assert not other_tab_session.disconnected.is_set()
    finally:
        for dash in (admin, other_tab_session, leaving):
            dash.close()

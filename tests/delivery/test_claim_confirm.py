"""A claim is an offer until the browser confirms it showed the notification.

The example app served by gunicorn on loopback; its users are plain HTTP sessions. A poll
whose reply nobody reads and a page response nobody reads (the request sent, the connection
closed: a killed tab, a cut connection) leave their rows offered, unconfirmed: once
NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT passes they are offered again, and the user sees
each one once. A confirmed offer (the ack endpoint, the ack outbox cookie a flashed page sets)
is delivered, counted by its channel, and never offered again.
"""

from __future__ import annotations

import socket
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from tests.conftest import login, user_id
from tests.support.apps import ServedApp, quick_config
from tests.support.pages import POLL_URL, client_settings, csrf_from_page, flashes, notification_rows, poll
from tests.support.services import free_port, wait_until

ACK_URL = "/emergency/api/notifications/ack"
#: short deadlines, so that an offer lapses within a test
FAST = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.2,
        "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5, "NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT": 1.0}


@pytest.fixture
def served(tmp_path: Any) -> Iterator[tuple[ServedApp, sa.engine.Engine]]:
    config = quick_config(tmp_path, **FAST)
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    server = ServedApp(free_port(), config, server="gunicorn-threads")
    try:
        yield server, engine
    finally:
        server.stop()
        engine.dispose()


def rows(engine: sa.engine.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT id, user_id, delivered, channel, offered_via FROM notify_emergency_notification ORDER BY id"))]


class Person:
    """A signed-in HTTP session of the served example app."""

    def __init__(self, server: ServedApp, name: str) -> None:
        self.url = server.url
        self.http = server.session_as(name)
        self.token = str(client_settings(self.page())["csrfToken"])

    def page(self, path: str = "/") -> str:
        response = self.http.get(self.url + path, timeout=10)
        assert response.status_code == 200
        return response.text

    def poll(self) -> list[dict[str, Any]]:
        response = self.http.post(self.url + POLL_URL, json={}, headers={"X-CSRF-Token": self.token}, timeout=10)
        assert response.status_code == 200
        return list(response.json()["notifications"])

    def ack(self, ids: list[int]) -> list[int]:
        response = self.http.post(self.url + ACK_URL, json={"ids": ids}, headers={"X-CSRF-Token": self.token},
                                  timeout=10)
        assert response.status_code == 200, response.text
        return list(response.json()["acknowledged"])

    def send_unread(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> None:
        """Send one request with this session's cookies and close the connection without
        reading a byte of the reply (the tab closed, the connection was cut)."""
        port = int(self.url.rsplit(":", 1)[1])
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
                 "Cookie: " + "; ".join(f"{k}={v}" for k, v in self.http.cookies.items()),
                 f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def send(self, to: str, title: str) -> None:
        """The demo's own send form, as the admin clicking "Send"."""
        response = self.http.post(f"{self.url}/send", data={"user_id": to, "title": title, "message": "body"},
                                  allow_redirects=False, timeout=10)
        assert response.status_code == 302

    def close(self) -> None:
        self.http.close()


def user_ids(engine: sa.engine.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {name: str(uid) for uid, name in conn.execute(sa.text("SELECT id, username FROM demo_user"))}


def test_a_poll_whose_reply_is_never_read_is_offered_again_and_shown_once(served):
    server, engine = served
    bob, admin = Person(server, "bob"), Person(server, "admin")
    try:
        admin.send(user_ids(engine)["bob"], "Lost reply")
        bob.send_unread("POST", POLL_URL, {"X-CSRF-Token": bob.token, "Content-Type": "application/json",
                                           "Accept": "application/json"}, b"{}")
        [offered] = wait_until(lambda: [r for r in rows(engine) if r["offered_via"] == "poll"], timeout=10,
                               message="the unread poll to offer the notification")
        assert not offered["delivered"]  # the reply never reached anyone: not delivered

        # once the confirmation deadline passes, the next polls offer it again
        got = wait_until(bob.poll, timeout=15, interval=0.1, message="the lapsed offer to be polled again")
        assert [(n["id"], n["title"]) for n in got] == [(offered["id"], "Lost reply")]
        assert bob.ack([offered["id"]]) == [offered["id"]]
        [row] = rows(engine)
        assert (bool(row["delivered"]), row["channel"]) == (True, "poll")
        assert bob.poll() == [] and flashes(bob.page()) == []
    finally:
        bob.close()
        admin.close()


def test_a_page_response_never_read_has_its_flash_offered_again(served):
    server, engine = served
    bob, admin = Person(server, "bob"), Person(server, "admin")
    try:
        admin.send(user_ids(engine)["bob"], "Page cut off")
        bob.send_unread("GET", "/", {"Accept": "text/html"})
        [offered] = wait_until(lambda: [r for r in rows(engine) if r["offered_via"] == "flash"], timeout=10,
                               message="the unread page to offer the notification as a flash")
        assert not offered["delivered"]

        # the flash never reached the browser (its ack outbox cookie with it): offered again
        shown = wait_until(lambda: flashes(bob.page()), timeout=15, interval=0.1,
                           message="the lapsed flash on a later page")
        assert shown == ["Page cut off: body"]
        # that page reached the browser: its cookie confirms it with the next request
        assert flashes(bob.page()) == [] and bob.poll() == []
        [row] = rows(engine)
        assert (bool(row["delivered"]), row["channel"]) == (True, "flash")
    finally:
        bob.close()
        admin.close()


# -- in process: the offer's life, on the test client ------------------------------------------

def test_a_confirmed_poll_is_never_offered_again_and_an_unconfirmed_one_is(make_app):
    app, _ = make_app(**FAST)
    notify = app.extensions["demo"]["notify"]
    alice = app.test_client()
    login(alice, "alice")
    token = csrf_from_page(alice)
    uid = user_id(app, "alice")
    with app.app_context():
        first = int(notify.send(uid, "Confirmed", "shown and confirmed"))
    assert [n["id"] for n in poll(alice, token).get_json()["notifications"]] == [first]
    assert poll(alice, token).get_json()["notifications"] == []  # offered: not twice meanwhile
    ack = alice.post(ACK_URL, json={"ids": [first]}, headers={"X-CSRF-Token": token})
    assert ack.get_json() == {"acknowledged": [first]}

    with app.app_context():
        second = int(notify.send(uid, "Unconfirmed", "shown, the confirmation lost"))
    polled: list[int] = []

    def offered_twice() -> bool:
        polled.extend(n["id"] for n in poll(alice, token).get_json()["notifications"])
        return polled.count(second) >= 2

    # the second one lapses and comes back (a confirmation deadline and a sweep passed) while
    # the confirmed first one never does
    wait_until(offered_twice, timeout=15, interval=0.05, message="the unconfirmed poll to be offered again")
    assert first not in polled
    by_id = {r["id"]: r for r in notification_rows(app)}
    assert (by_id[first]["delivered"], by_id[first]["channel"], by_id[first]["attempts"]) == (True, "poll", 1)
    assert (by_id[second]["delivered"], by_id[second]["offered_via"]) == (False, "poll")

    # the client's outbox cookie on its next poll confirms it, counted by the poll
    alice.set_cookie(app.config["NOTIFY_EMERGENCY_ACK_COOKIE_NAME"], str(second))
    poll(alice, token)
    assert [(r["delivered"], r["channel"]) for r in notification_rows(app)] == [(True, "poll")] * 2


def test_the_ack_endpoint_needs_the_csrf_token_and_a_list_of_ids(make_app):
    app, _ = make_app(**FAST)
    alice = app.test_client()
    login(alice, "alice")
    token = csrf_from_page(alice)
    assert alice.post(ACK_URL, json={"ids": [1]}).status_code == 400
    assert alice.post(ACK_URL, json={"ids": 1}, headers={"X-CSRF-Token": token}).status_code == 400
    assert alice.post(ACK_URL, json={"ids": list(range(1, 300))}, headers={"X-CSRF-Token": token}).status_code == 400
    assert alice.post(ACK_URL, json={"ids": ["x", True, -1, 2**70]},
                      headers={"X-CSRF-Token": token}).get_json() == {"acknowledged": []}
    assert app.test_client().post(ACK_URL, json={"ids": [1]}).status_code == 401


def test_a_flash_counts_as_delivered_only_when_the_next_request_brings_its_cookie(make_app):
    app, _ = make_app(**FAST)
    notify = app.extensions["demo"]["notify"]
    cookie = app.config["NOTIFY_EMERGENCY_ACK_COOKIE_NAME"]
    alice = app.test_client()
    login(alice, "alice")
    with app.app_context():
        nid = int(notify.send(user_id(app, "alice"), "Flashed", "on a page"))
    response = alice.get("/")
    assert flashes(response.get_data(as_text=True)) == ["Flashed: on a page"]
    assert f"{cookie}={nid};" in response.headers["Set-Cookie"]  # the page carries its flash's id
    assert [(r["delivered"], r["offered_via"]) for r in notification_rows(app)] == [(False, "flash")]

    nxt = alice.get("/")  # the browser's next request: confirmed, and out of the cookie
    assert flashes(nxt.get_data(as_text=True)) == []
    assert f"{cookie}=;" in nxt.headers["Set-Cookie"]
    assert [(r["delivered"], r["channel"], r["attempts"]) for r in notification_rows(app)] == [(True, "flash", 1)]

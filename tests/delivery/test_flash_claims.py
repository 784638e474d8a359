"""Flashed notifications reach the page of the user they are for, once, as text.

The example app with a few more routes of the kinds a host has: a page that does not render
flashes, a redirect, an error, a JSON response. Rows claimed for a response that will not
show them go back to pending; a logout takes back what waits in the session; the ack outbox
cookie acknowledges before anything is flashed.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import abort, get_flashed_messages, jsonify, redirect, render_template_string
from markupsafe import Markup

from flask_notify_emergency.delivery.ack_outbox import outbox_ids
from flask_notify_emergency.delivery.flashes import flash_id, id_marker
from tests.conftest import login, user_id
from tests.support.pages import csrf_from_page, flash_ids, flashes, notification_rows, poll

FAST = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5,
        "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5}
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def host_routes(app: Any) -> None:
    """Routes of the kinds a host has, besides pages that render flashes."""

    @app.route("/plain")
    def plain() -> str:
        return "<!doctype html><title>plain</title><p>A page without flashes.</p>"

    @app.route("/go")
    def go() -> Any:
        return redirect("/")

    @app.route("/missing")
    def missing() -> Any:
        abort(404)

    @app.route("/broken")
    def broken() -> Any:
        abort(500)

    @app.route("/data")
    def data() -> Any:
        return jsonify(ok=True)

    @app.route("/safe")
    def safe() -> str:
        # a host template of a common shape: flashes printed with |safe
        return render_template_string("{% for m in get_flashed_messages() %}<p class=m>{{ m|safe }}</p>{% endfor %}")

    @app.route("/as-json")
    def as_json() -> Any:
        # a host that hands flashes to its own script as text
        return jsonify(messages=get_flashed_messages())


@pytest.fixture
def host(make_app: Any) -> tuple[Any, Any]:
    app, _ = make_app(NOTIFY_EMERGENCY_FLASH_SKIP_ENDPOINTS=["plain"], **FAST)
    host_routes(app)
    return app, app.extensions["demo"]["notify"]


def send_many(app: Any, notify: Any, name: str, titles: list[str], message: str = "body") -> list[int]:
    uid = user_id(app, name)
    with app.app_context():
        return [int(notify.send(uid, title, message)) for title in titles]


def read_all_flashes(client: Any) -> list[str]:
    """Every flash the user reads over as many pages as it takes."""
    seen: list[str] = []
    for _ in range(20):
        page = flashes(client.get("/").get_data(as_text=True))
        if not page:
            return seen
        seen += page
    raise AssertionError("flashes never ran out")


def session_flashes(client: Any) -> list[Any]:
    with client.session_transaction() as sess:
        return list(sess.get("_flashes", []))


# -- the flash itself --------------------------------------------------------------------------

def test_a_flash_is_escaped_markup_carrying_its_id_invisibly(host):
    app, notify = host
    alice = app.test_client()
    login(alice, "alice")
    [nid] = send_many(app, notify, "alice", ["Caption <ready>"], message=HOSTILE)
    page = alice.get("/").get_data(as_text=True)

    assert flash_ids(page) == [nid]
    assert flashes(page) == [f"Caption <ready>: {HOSTILE}"]  # literally, as text
    assert "<script>window.pwned" not in page and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page

    [nid2] = send_many(app, notify, "alice", ["Second"], message=HOSTILE)
    safe_page = alice.get("/safe").get_data(as_text=True)  # {{ m|safe }} prints our escaped Markup
    assert "<script>" not in safe_page and "<img" not in safe_page
    assert f"<p class=m>Second: {Markup.escape(HOSTILE)}{id_marker(nid2)}</p>" == safe_page

    [nid3] = send_many(app, notify, "alice", ["Third"])
    messages = alice.get("/as-json", headers={"Accept": "text/html"}).get_json()["messages"]
    # text hosts get the text and an invisible marker; nothing that shows as markup
    assert messages == [f"Third: body{id_marker(nid3)}"]
    assert notification_rows(app, id=nid3)[0]["delivered"] is False  # JSON shows nothing: given back


def test_flash_id_reads_only_the_extensions_own_flashes():
    assert flash_id(Markup("Hi: there") + Markup(id_marker(12345))) == 12345
    assert flash_id("Hi: there" + id_marker(7)) == 7  # a session serializer that loses Markup
    assert flash_id(Markup("Saved.")) is None and flash_id("Saved.") is None and flash_id(None) is None
    assert flash_id(Markup("x") + Markup(id_marker(3)) + Markup("after")) is None  # only at the end


# -- responses that will not show them -------------------------------------------------------

@pytest.mark.parametrize("path, status", [("/go", 302), ("/missing", 404), ("/broken", 500), ("/data", 200)])
def test_rows_claimed_for_a_redirect_an_error_or_json_go_back_to_pending(host, path, status):
    app, notify = host
    alice = app.test_client()
    login(alice, "alice")
    ids = send_many(app, notify, "alice", ["one", "two"])

    response = alice.get(path, headers={"Accept": "text/html,*/*"})
    assert response.status_code == status
    assert [r["delivered"] for r in notification_rows(app)] == [False, False]
    assert session_flashes(alice) == []  # nothing of ours left waiting in the session

    assert read_all_flashes(alice) == ["one: body", "two: body"]
    assert [(r["delivered"], r["channel"]) for r in notification_rows(app)] == [(True, "flash")] * 2
    assert ids == [r["id"] for r in notification_rows(app)]


def test_a_page_that_shows_flashes_keeps_them_and_the_hosts_own_flashes_stay(host):
    app, notify = host

    @app.route("/note")
    def note() -> Any:
        from flask import flash

        flash("Saved.", "info")
        return redirect("/")

    alice = app.test_client()
    login(alice, "alice")
    send_many(app, notify, "alice", ["one"])
    alice.get("/note", headers={"Accept": "text/html"})  # a redirect: ours go back, the host's stays
    assert [m for _, m in session_flashes(alice)] == ["Saved."]
    page = alice.get("/").get_data(as_text=True)
    assert flashes(page) == ["Saved.", "one: body"]
    # offered by the flash; the browser's next request carries the page's ack outbox cookie
    assert [(r["delivered"], r["offered_via"]) for r in notification_rows(app)] == [(False, "flash")]
    alice.get("/plain")
    assert [(r["delivered"], r["channel"]) for r in notification_rows(app)] == [(True, "flash")]


def test_an_excluded_endpoint_claims_nothing(host):
    app, notify = host
    alice = app.test_client()
    login(alice, "alice")
    send_many(app, notify, "alice", ["one"])
    assert alice.get("/plain").status_code == 200
    assert notification_rows(app)[0]["delivered"] is False and session_flashes(alice) == []
    assert read_all_flashes(alice) == ["one: body"]


def test_a_bad_skip_list_is_refused(make_app):
    from flask_notify_emergency import ConfigError

    with pytest.raises(ConfigError, match="NOTIFY_EMERGENCY_FLASH_SKIP_ENDPOINTS"):
        make_app(NOTIFY_EMERGENCY_FLASH_SKIP_ENDPOINTS="logout")


# -- logout --------------------------------------------------------------------------------------

def test_logout_gives_back_what_was_flashed_and_the_next_visitor_sees_nothing(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_FLASH_SKIP_ENDPOINTS=[], **FAST)
    host_routes(app)
    notify = app.extensions["demo"]["notify"]
    browser = app.test_client()
    login(browser, "alice")
    titles = [f"private {i}" for i in range(5)]
    send_many(app, notify, "alice", titles)

    # a page that does not render flashes: three wait in the session (a 200 HTML page keeps them)
    assert browser.get("/plain").status_code == 200
    assert len([m for _, m in session_flashes(browser) if flash_id(m)]) == 3
    # the logout request would claim more; everything of alice's goes back
    assert browser.get("/logout").status_code == 302
    assert session_flashes(browser) == []
    assert [r["delivered"] for r in notification_rows(app)] == [False] * 5

    # the next person at this browser
    assert flashes(browser.get("/login").get_data(as_text=True)) == []
    login(browser, "bob")
    assert read_all_flashes(browser) == []
    browser.get("/logout")

    owner = app.test_client()
    login(owner, "alice")
    assert read_all_flashes(owner) == [f"{t}: body" for t in titles]
    assert {(r["delivered"], r["channel"]) for r in notification_rows(app)} == {(True, "flash")}


# -- the ack outbox --------------------------------------------------------------------------------

def test_outbox_cookie_values_are_read_strictly():
    assert outbox_ids("12.7.99") == [12, 7, 99]
    assert outbox_ids("12.x.-3.٣.7") == [12, 7]
    assert outbox_ids(".".join(str(i) for i in range(1, 100))) == list(range(1, 21))
    assert outbox_ids("") == [] and outbox_ids(None) == []


def test_the_outbox_is_acknowledged_before_a_page_flashes(host):
    app, notify = host
    alice = app.test_client()
    login(alice, "alice")
    bob_id = send_many(app, notify, "bob", ["for bob"])[0]
    ids = send_many(app, notify, "alice", ["shown", "not yet"])
    cookie = app.config["NOTIFY_EMERGENCY_ACK_COOKIE_NAME"]
    alice.set_cookie(cookie, f"{ids[0]}.{bob_id}.junk")

    page = alice.get("/").get_data(as_text=True)
    assert flashes(page) == ["not yet: body"]
    rows = {r["id"]: r for r in notification_rows(app)}
    assert (rows[ids[0]]["delivered"], rows[ids[0]]["channel"]) == (True, "realtime")
    assert rows[bob_id]["delivered"] is False  # another user's id in the cookie changes nothing
    # a second request with the same cookie changes nothing either
    assert flashes(alice.get("/").get_data(as_text=True)) == []
    assert notification_rows(app, id=ids[0])[0]["delivered_at"] == rows[ids[0]]["delivered_at"]


def test_the_outbox_is_acknowledged_before_a_poll_claims(host):
    app, notify = host
    alice = app.test_client()
    login(alice, "alice")
    token = csrf_from_page(alice)
    ids = send_many(app, notify, "alice", ["shown", "not yet"])
    alice.set_cookie(app.config["NOTIFY_EMERGENCY_ACK_COOKIE_NAME"], str(ids[0]))

    got = poll(alice, token).get_json()["notifications"]
    assert [n["id"] for n in got] == [ids[1]]
    assert [(r["channel"], r["offered_via"]) for r in notification_rows(app)] == [("realtime", None), (None, "poll")]

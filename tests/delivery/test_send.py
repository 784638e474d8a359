"""``notify.send()`` as a user experiences it: over the socket, by flash, by polling."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy

from flask_notify_emergency import ConfigError, NotifyEmergency, signals
from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from tests.conftest import login, user_id
from tests.support.pages import (NAMESPACE, POLL_URL, csrf_from_page, flashes, notification_rows, poll,
                                 received, visible)
from tests.support.services import wait_until

FAST = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5,
        "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5}


@pytest.fixture
def demo(make_app: Any) -> tuple[Any, Any, Any]:
    """(app, socketio, notify) of the example app with short timeouts."""
    app, socketio = make_app(**FAST)
    return app, socketio, app.extensions["demo"]["notify"]


#: The two ways to send: one call per user, or one call for many (here with one user in it).
WAYS = ["send", "send_many"]


@pytest.fixture(params=WAYS)
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(make_app: Any) -> Any:
    """pytest-flask's application here: the example app with short timeouts (one identity per test)."""
    return make_app(**FAST)[0]


def send(app: Any, notify: Any, to: Any, title: str = "Caption ready",
         message: str = "Your image has alt text now.", way: str = "send", **kwargs: Any) -> int:
    with app.app_context():
        if way == "send_many":
            (nid,) = notify.send_many([to], title, message, **kwargs)
            return int(nid)
        return int(notify.send(to, title, message, **kwargs))


def connect_socket(socketio: Any, app: Any, client: Any) -> Any:
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    assert sio.is_connected(NAMESPACE)
    return sio


# -- the real-time path ----------------------------------------------------------------------

def test_connected_user_gets_it_over_the_socket_and_the_ack_marks_it_delivered(demo, way):
    app, socketio, notify = demo
    client = app.test_client()
    login(client, "alice")
    sio = connect_socket(socketio, app, client)
    nid = send(app, notify, user_id(app, "alice"), data={"image": 7}, way=way)

    got = received(sio, EVENT)
    assert [n["id"] for n in got] == [nid]
    assert got[0]["title"] == "Caption ready" and got[0]["data"] == {"image": 7}
    assert notification_rows(app)[0]["delivered"] is False  # emitted is not delivered

    answer = sio.emit(ACK_EVENT, {"id": nid}, namespace=NAMESPACE, callback=True)
    assert answer == {"ok": True, "acknowledged": [nid]}
    row = notification_rows(app)[0]
    assert row["delivered"] is True and row["channel"] == "realtime"
    # delivered over the socket, so never flashed or polled afterwards
    assert flashes(client.get("/").get_data(as_text=True)) == []
    assert poll(client, csrf_from_page(client)).get_json()["notifications"] == []
    sio.disconnect(NAMESPACE)


def test_a_second_ack_of_the_same_notification_changes_nothing(demo):
    app, socketio, notify = demo
    client = app.test_client()
    login(client, "alice")
    sio = connect_socket(socketio, app, client)
    nid = send(app, notify, user_id(app, "alice"))
    assert sio.emit(ACK_EVENT, {"id": nid}, namespace=NAMESPACE, callback=True)["acknowledged"] == [nid]
    assert sio.emit(ACK_EVENT, {"id": nid}, namespace=NAMESPACE, callback=True)["acknowledged"] == []


def test_a_user_cannot_acknowledge_someone_elses_notification(demo):
    app, socketio, notify = demo
    bob = app.test_client()
    login(bob, "bob")
    bob_sio = connect_socket(socketio, app, bob)
    nid = send(app, notify, user_id(app, "alice"))
    assert bob_sio.emit(ACK_EVENT, {"id": nid}, namespace=NAMESPACE, callback=True)["acknowledged"] == []
    assert notification_rows(app)[0]["delivered"] is False
    alice = app.test_client()
    login(alice, "alice")
    assert flashes(alice.get("/").get_data(as_text=True)) == ["Caption ready: Your image has alt text now."]


def test_anonymous_socket_is_refused(demo):
    app, socketio, _ = demo
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=app.test_client())
    assert not sio.is_connected(NAMESPACE)


# -- the flash fallback ------------------------------------------------------------------------

def test_disconnected_user_gets_it_as_a_flash_exactly_once(demo, way):
    app, socketio, notify = demo
    client = app.test_client()
    login(client, "alice")
    sio = connect_socket(socketio, app, client)
    sio.disconnect(NAMESPACE)
    send(app, notify, user_id(app, "alice"), way=way)

    first = flashes(client.get("/").get_data(as_text=True))
    second = flashes(client.get("/").get_data(as_text=True))
    assert first == ["Caption ready: Your image has alt text now."]
    assert second == []
    assert [(r["delivered"], r["channel"]) for r in notification_rows(app)] == [(True, "flash")]
    assert poll(client, csrf_from_page(client)).get_json()["notifications"] == []


def test_flash_category_follows_priority(app, client):
    notify = app.extensions["demo"]["notify"]
    login(client, "alice")
    send(app, notify, user_id(app, "alice"), title="Disk", message="Almost full.", priority="critical")
    page = visible(client.get("/").get_data(as_text=True))
    assert '<div class="flash danger" role="status">Disk: Almost full.</div>' in page


def test_flash_batch_limit_spreads_a_backlog_over_pages_once_each(make_app, way):
    app, _ = make_app(NOTIFY_EMERGENCY_FLASH_BATCH_SIZE=3, **FAST)
    notify = app.extensions["demo"]["notify"]
    client = app.test_client()
    login(client, "alice")
    uid = user_id(app, "alice")
    for i in range(10):
        send(app, notify, uid, title=f"Item {i}", message="ready", way=way)

    pages: list[list[str]] = []
    while len(pages) < 10:
        shown = flashes(client.get("/").get_data(as_text=True))
        if not shown:
            break
        pages.append(shown)
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    seen = [m for p in pages for m in p]
    assert seen == [f"Item {i}: ready" for i in range(10)]
    assert all(r["delivered"] and r["channel"] == "flash" for r in notification_rows(app))


# -- isolation -----------------------------------------------------------------------------------

def test_another_user_never_sees_someone_elses_notification(demo, way):
    app, socketio, notify = demo
    bob = app.test_client()
    login(bob, "bob")
    bob_token = csrf_from_page(bob)
    bob_sio = connect_socket(socketio, app, bob)
    received(bob_sio, EVENT)

    send(app, notify, user_id(app, "alice"), title="For Alice", message="only", way=way)

    assert received(bob_sio, EVENT) == []
    assert poll(bob, bob_token).get_json()["notifications"] == []
    assert "For Alice" not in bob.get("/").get_data(as_text=True)
    alice = app.test_client()
    login(alice, "alice")
    assert flashes(alice.get("/").get_data(as_text=True)) == ["For Alice: only"]


# -- bad input ---------------------------------------------------------------------------------

BAD_INPUT = [
    ({"title": ""}, "title must be a non-empty string"),
    ({"title": "   "}, "title must be a non-empty string"),
    ({"message": ""}, "message must be a non-empty string"),
    ({"priority": "urgent"}, "priority must be one of low, normal, high, critical; got 'urgent'"),
    ({"title": "x" * 21}, "title is 21 characters; the limit is 20 (NOTIFY_EMERGENCY_TITLE_MAX_LENGTH)"),
    ({"message": "y" * 41}, "message is 41 characters; the limit is 40 (NOTIFY_EMERGENCY_MESSAGE_MAX_LENGTH)"),
    ({"data": {"when": object()}}, "data must be JSON-serialisable"),
    ({"user_id": "999999"}, "no such user '999999'"),
    ({"user_id": "nobody"}, "no such user 'nobody'"),
    ({"user_id": True}, "user_id must be an int or a str"),
    ({"user_id": None}, "user_id must be an int or a str"),
    ({"user_id": 2.0}, "user_id must be an int or a str"),
    ({"category": ""}, "category must be a non-empty string"),
    ({"action_url": "javascript:alert(1)"}, "action_url must be a path"),
]


@pytest.mark.parametrize("change,problem", BAD_INPUT, ids=[p for _, p in BAD_INPUT])
def test_send_rejects_bad_input_naming_the_problem_and_stores_nothing(make_app, change, problem, way):
    app, _ = make_app(NOTIFY_EMERGENCY_TITLE_MAX_LENGTH=20, NOTIFY_EMERGENCY_MESSAGE_MAX_LENGTH=40, **FAST)
    notify = app.extensions["demo"]["notify"]
    args = {"user_id": user_id(app, "alice"), "title": "Fine", "message": "Fine too."}
    args.update(change)
    with app.app_context():
        with pytest.raises(ValueError) as err:
            if way == "send_many":  # a good user first: the bad one must still stop everything
                notify.send_many([user_id(app, "bob"), args.pop("user_id")], args.pop("title"),
                                 args.pop("message"), **args)
            else:
                notify.send(args.pop("user_id"), args.pop("title"), args.pop("message"), **args)
    assert problem in str(err.value)
    assert notification_rows(app) == []


@pytest.mark.parametrize("as_type", [int, str])
def test_user_id_may_be_int_or_str(demo, as_type):
    app, _, notify = demo
    client = app.test_client()
    login(client, "alice")
    nid = send(app, notify, as_type(user_id(app, "alice")))
    assert notification_rows(app)[0]["id"] == nid
    assert notification_rows(app)[0]["user_id"] == user_id(app, "alice")
    assert flashes(client.get("/").get_data(as_text=True)) == ["Caption ready: Your image has alt text now."]


# -- polling -----------------------------------------------------------------------------------

def test_poll_returns_pending_notifications_exactly_once(app, client, way):
    notify = app.extensions["demo"]["notify"]
    login(client, "alice")
    token = csrf_from_page(client)
    ids = [send(app, notify, user_id(app, "alice"), title=f"N{i}", way=way) for i in range(2)]

    first = poll(client, token)
    assert first.status_code == 200
    body = first.get_json()
    assert [n["id"] for n in body["notifications"]] == ids
    assert body["notifications"][0]["title"] == "N0" and "user_id" not in body["notifications"][0]
    assert body["mode"] == "normal"
    assert poll(client, token).get_json()["notifications"] == []
    assert flashes(client.get("/").get_data(as_text=True)) == []
    assert {(r["delivered"], r["offered_via"]) for r in notification_rows(app)} == {(False, "poll")}
    # the client confirms what it showed
    ack = client.post("/emergency/api/notifications/ack", json={"ids": ids}, headers={"X-CSRF-Token": token})
    assert ack.get_json() == {"acknowledged": ids}
    assert {(r["delivered"], r["channel"]) for r in notification_rows(app)} == {(True, "poll")}
    assert poll(client, token).get_json()["notifications"] == []


def test_poll_refuses_a_request_without_csrf_token(app, client):
    notify = app.extensions["demo"]["notify"]
    login(client, "alice")
    csrf_from_page(client)
    send(app, notify, user_id(app, "alice"))
    assert client.post(POLL_URL, json={}).status_code == 400
    assert client.post(POLL_URL, json={}, headers={"X-CSRF-Token": "forged"}).status_code == 400
    assert notification_rows(app)[0]["delivered"] is False  # nothing was handed out


def test_poll_refuses_anonymous_users(app, client):
    send(app, app.extensions["demo"]["notify"], user_id(app, "alice"))
    response = client.post(POLL_URL, json={}, headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.get_json() == {"error": "login required"}
    assert notification_rows(app)[0]["delivered"] is False


# -- modes, timeouts, fallbacks ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["emergency", "legacy"])
def test_emergency_and_legacy_mode_send_a_connected_user_to_the_fallback(demo, mode, way):
    app, socketio, notify = demo
    client = app.test_client()
    login(client, "alice")
    token = csrf_from_page(client)
    sio = connect_socket(socketio, app, client)
    ext = app.extensions["notify_emergency"]
    reasons: list[str] = []

    def on_fallback(sender: Any, notification: dict[str, Any], reason: str, **_: Any) -> None:
        reasons.append(reason)

    with app.app_context():
        ext.control.set_mode(mode, "test")
    received(sio, EVENT)
    with signals.notification_fallback.connected_to(on_fallback, sender=app):
        nid = send(app, notify, user_id(app, "alice"), way=way)

    assert reasons == [f"mode-{mode}"]
    assert received(sio, EVENT) == []
    body = poll(client, token).get_json()
    assert [n["id"] for n in body["notifications"]] == [nid]
    assert body["mode"] == mode


def test_a_notification_that_is_never_acknowledged_reaches_the_user_after_the_timeout(demo, way):
    app, socketio, notify = demo
    client = app.test_client()
    login(client, "alice")
    token = csrf_from_page(client)
    sio = connect_socket(socketio, app, client)
    nid = send(app, notify, user_id(app, "alice"), way=way)
    assert [n["id"] for n in received(sio, EVENT)] == [nid]  # shown, but the client never acks

    # while the ack may still come, the fallbacks leave the row alone
    assert poll(client, token).get_json()["notifications"] == []
    got = wait_until(lambda: poll(client, token).get_json()["notifications"], timeout=10,
                     message="the unacknowledged notification to reach the poll")
    assert [n["id"] for n in got] == [nid]
    assert poll(client, token).get_json()["notifications"] == []
    assert flashes(client.get("/").get_data(as_text=True)) == []
    # offered by the poll; delivered when the client confirms showing it
    assert [(r["delivered"], r["offered_via"]) for r in notification_rows(app)] == [(False, "poll")]
    client.set_cookie(app.config["NOTIFY_EMERGENCY_ACK_COOKIE_NAME"], str(nid))
    assert poll(client, token).get_json()["notifications"] == []
    assert [(r["delivered"], r["channel"]) for r in notification_rows(app)] == [(True, "poll")]


def test_a_hosts_own_fallback_receiver_gets_the_notification_and_reason(demo, way):
    app, _, notify = demo
    calls: list[tuple[Any, dict[str, Any], str]] = []

    def to_pager(sender: Any, notification: dict[str, Any], reason: str, **_: Any) -> None:
        calls.append((sender, notification, reason))

    with signals.notification_fallback.connected_to(to_pager, sender=app):
        nid = send(app, notify, user_id(app, "alice"), title="Disk", message="Almost full.", priority="high", way=way)
    assert len(calls) == 1
    sender, notification, reason = calls[0]
    assert sender is app
    assert reason == "offline"
    assert notification["id"] == nid and notification["user_id"] == user_id(app, "alice")
    assert (notification["title"], notification["message"], notification["priority"]) == \
        ("Disk", "Almost full.", "high")


def test_a_hosts_fallback_receiver_gets_the_whole_notification_after_an_ack_timeout(demo, way):
    app, socketio, notify = demo
    client = app.test_client()
    login(client, "alice")
    sio = connect_socket(socketio, app, client)
    calls: list[tuple[dict[str, Any], str]] = []

    def to_pager(sender: Any, notification: dict[str, Any], reason: str, **_: Any) -> None:
        calls.append((notification, reason))

    with signals.notification_fallback.connected_to(to_pager, sender=app):
        nid = send(app, notify, user_id(app, "alice"), title="Disk", message="Almost full.", priority="high", way=way)
        wait_until(lambda: calls, timeout=10, message="the fallback after the ack timeout")
    (notification, reason), = calls
    assert reason == "ack-timeout"
    assert (notification["id"], notification["user_id"]) == (nid, user_id(app, "alice"))
    # a pager or SMS receiver needs the text, not just the id
    assert (notification["title"], notification["message"], notification["priority"]) == \
        ("Disk", "Almost full.", "high")
    sio.disconnect(NAMESPACE)


def test_sent_and_delivered_signals_fire_with_their_documented_arguments(demo, way):
    app, socketio, notify = demo
    client = app.test_client()
    login(client, "alice")
    sio = connect_socket(socketio, app, client)
    uid = user_id(app, "alice")
    sent: list[dict[str, Any]] = []
    delivered: list[dict[str, Any]] = []

    def on_sent(sender: Any, **kwargs: Any) -> None:
        assert sender is app
        sent.append(kwargs)

    def on_delivered(sender: Any, **kwargs: Any) -> None:
        assert sender is app
        delivered.append(kwargs)

    with signals.notification_sent.connected_to(on_sent, sender=app), \
            signals.notification_delivered.connected_to(on_delivered, sender=app):
        nid = send(app, notify, uid, category="captions", data={"n": 1}, way=way)
        assert delivered == []  # stored and emitted is not delivered
        sio.emit(ACK_EVENT, {"id": nid}, namespace=NAMESPACE, callback=True)
        sio.disconnect(NAMESPACE)
        nid2 = send(app, notify, uid, title="Second", way=way)
        client.get("/")
        assert len(delivered) == 1  # flashed is offered: delivered when the browser confirms it
        client.get("/")  # the next request carries the page's ack outbox cookie

    assert [set(k) for k in sent] == [{"notification"}, {"notification"}]
    first = sent[0]["notification"]
    assert {"id", "user_id", "title", "message", "priority", "category", "data"} <= set(first)
    assert (first["id"], first["user_id"], first["category"], first["data"]) == (nid, uid, "captions", {"n": 1})
    assert sent[1]["notification"]["id"] == nid2
    # every delivery also says how long each took from creation (read with the rows)
    for signal in delivered:
        (seconds,) = signal.pop("seconds")
        assert isinstance(seconds, float) and seconds >= 0
    assert delivered == [
        {"notification_ids": [nid], "user_id": uid, "channel": "realtime"},
        {"notification_ids": [nid2], "user_id": uid, "channel": "flash"},
    ]


def test_acks_and_claims_racing_for_one_notification_deliver_it_once(demo, way):
    app, socketio, notify = demo
    client = app.test_client()
    login(client, "alice")
    sio = connect_socket(socketio, app, client)
    uid = user_id(app, "alice")
    ext = app.extensions["notify_emergency"]
    nid = send(app, notify, uid, way=way)
    wins: list[str] = []
    start = threading.Barrier(2)

    def ack() -> None:
        start.wait()
        with app.app_context():
            if ext.dispatcher.acknowledge(nid, uid):
                wins.append("realtime")

    def expire_and_claim() -> None:
        start.wait()
        with app.app_context():
            ext.store.release_realtime([nid])
            wins.extend("flash" for _ in ext.store.claim(uid, 10, "flash"))

    threads = [threading.Thread(target=ack), threading.Thread(target=expire_and_claim)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # the claim only offers it: the ack delivers it either way, counted by the flash that
    # offered it first when the claim won the race
    assert "realtime" in wins and len(wins) <= 2
    assert notification_rows(app)[0]["channel"] == ("flash" if "flash" in wins else "realtime")
    sio.disconnect(NAMESPACE)


# -- wiring errors -----------------------------------------------------------------------------

def _bare_app(tmp_path: Any, **config: Any) -> tuple[Flask, SQLAlchemy]:
    app = Flask("bare")
    app.config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'bare.sqlite'}",
                      NOTIFY_EMERGENCY_MONITOR_ENABLED=False, **config)
    LoginManager(app)
    return app, SQLAlchemy(app)


BAD_CONFIG = [
    ("NOTIFY_EMERGENCY_ACK_TIMEOUT", 0),
    ("NOTIFY_EMERGENCY_ACK_TIMEOUT", "5"),
    ("NOTIFY_EMERGENCY_FLASH_BATCH_SIZE", 0),
    ("NOTIFY_EMERGENCY_FLASH_BATCH_SIZE", True),
    ("NOTIFY_EMERGENCY_BREAKER_FAILURE_RATE", 1.5),
    ("NOTIFY_EMERGENCY_BREAKER_MIN_CALLS", 2.5),
    ("NOTIFY_EMERGENCY_URL_PREFIX", "emergency/"),
    ("NOTIFY_EMERGENCY_STATE_BACKEND", "memcached"),
    ("NOTIFY_EMERGENCY_FLASH_CATEGORIES", {"low": "info"}),
    ("NOTIFY_EMERGENCY_DEFAULT_EXPIRY", -1),
    ("NOTIFY_EMERGENCY_IS_ADMIN", "yes"),
]


@pytest.mark.parametrize("key,value", BAD_CONFIG, ids=[f"{k}={v!r}" for k, v in BAD_CONFIG])
def test_bad_config_raises_config_error_naming_the_key(tmp_path, key, value):
    app, db = _bare_app(tmp_path, **{key: value})
    with pytest.raises(ConfigError) as err:
        NotifyEmergency(app, db=db)
    assert key in str(err.value)
    assert repr(value) in str(err.value)  # says what it got, next to what it needs
    assert "notify_emergency" not in app.extensions


def test_redis_backend_without_url_says_which_key_to_set(tmp_path):
    app, db = _bare_app(tmp_path, NOTIFY_EMERGENCY_STATE_BACKEND="redis")
    with pytest.raises(ConfigError, match="NOTIFY_EMERGENCY_REDIS_URL is not set"):
        NotifyEmergency(app, db=db)


def test_init_app_twice_on_one_app_is_refused(demo):
    app, socketio, _ = demo
    db = app.extensions["demo"]["db"]
    with pytest.raises(RuntimeError, match="already registered on this app"):
        NotifyEmergency().init_app(app, db=db, socketio=socketio)


def test_missing_db_says_how_to_fix_it(tmp_path):
    app, _ = _bare_app(tmp_path)
    with pytest.raises(RuntimeError) as err:
        NotifyEmergency(app)
    assert "pass init_app(app, db=db)" in str(err.value)
    assert "notify_emergency" not in app.extensions


def test_db_not_initialised_on_the_app_says_how_to_fix_it(tmp_path):
    app = Flask("bare")
    app.config.update(SECRET_KEY="x")
    db = SQLAlchemy()
    with pytest.raises(RuntimeError, match=r"db.init_app\(app\) to run first"):
        NotifyEmergency(app, db=db)

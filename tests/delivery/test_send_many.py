"""``notify.send_many()``: one notification for each of many users, stored in batched inserts,
delivered exactly once each by the same paths as ``send()`` (the shared delivery tests in
``test_send.py`` and ``test_roundtrip.py`` run on both)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import sqlalchemy as sa

from flask_notify_emergency import signals
from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from flask_notify_emergency.delivery.store import INSERT_BATCH
from tests.conftest import login, user_id
from tests.support.pages import NAMESPACE, csrf_from_page, flashes, notification_rows, poll, received

FAST = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 30.0, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 30.0,
        "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5}


def test_connected_users_get_one_emit_each_and_offline_users_one_fallback_each(make_app):
    app, socketio = make_app(**FAST)
    notify = app.extensions["demo"]["notify"]
    ext = app.extensions["notify_emergency"]
    alice_id, bob_id, carol_id = (user_id(app, n) for n in ("alice", "bob", "admin"))
    alice = app.test_client()
    login(alice, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=alice)
    received(sio, EVENT)
    carol = app.test_client()  # "carol" is the demo's admin: a page open, polling, no socket
    login(carol, "admin")
    carol_token = csrf_from_page(carol)
    fallbacks: list[tuple[int, str, str]] = []

    def to_pager(sender: Any, notification: dict[str, Any], reason: str, **_: Any) -> None:
        fallbacks.append((notification["id"], notification["user_id"], reason))

    with app.app_context(), signals.notification_fallback.connected_to(to_pager, sender=app):
        ids = notify.send_many([alice_id, bob_id, int(carol_id)], "Maintenance", "Tonight at 22:00.",
                               priority="high", category="ops", data={"window": "22-23"})

    rows = notification_rows(app)
    assert [r["id"] for r in rows] == ids  # the ids come back in the order of the user ids
    assert [r["user_id"] for r in rows] == [alice_id, bob_id, carol_id]
    assert {(r["title"], r["priority"], r["category"]) for r in rows} == {("Maintenance", "high", "ops")}
    # alice is connected: her row went over the socket and awaits her ack
    got = received(sio, EVENT)
    assert [(n["id"], n["data"]) for n in got] == [(ids[0], {"window": "22-23"})]
    assert rows[0]["realtime_deadline"] is not None and rows[0]["attempts"] == 1
    # bob and carol are not: the fallbacks got theirs, once each, and nothing awaits an ack
    assert sorted(fallbacks) == [(ids[1], bob_id, "offline"), (ids[2], carol_id, "offline")]
    assert [r["realtime_deadline"] for r in rows[1:]] == [None, None]
    assert ext.state.may_have_pending(bob_id) and ext.state.may_have_pending(carol_id)
    assert not ext.state.may_have_pending(alice_id)

    assert sio.emit(ACK_EVENT, {"id": ids[0]}, namespace=NAMESPACE, callback=True) == \
        {"ok": True, "acknowledged": [ids[0]]}
    bob = app.test_client()
    login(bob, "bob")
    assert flashes(bob.get("/").get_data(as_text=True)) == ["Maintenance: Tonight at 22:00."]
    assert flashes(bob.get("/").get_data(as_text=True)) == []
    assert [n["id"] for n in poll(carol, carol_token).get_json()["notifications"]] == [ids[2]]
    carol.set_cookie(app.config["NOTIFY_EMERGENCY_ACK_COOKIE_NAME"], str(ids[2]))  # shown: confirmed
    poll(carol, carol_token)
    assert [(r["delivered"], r["channel"]) for r in notification_rows(app)] == \
        [(True, "realtime"), (True, "flash"), (True, "poll")]
    sio.disconnect(NAMESPACE)


def test_one_unusable_user_id_stores_and_sends_nothing_and_says_which(make_app):
    app, socketio = make_app(**FAST)
    notify = app.extensions["demo"]["notify"]
    alice = app.test_client()
    login(alice, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=alice)
    received(sio, EVENT)
    with app.app_context():
        with pytest.raises(ValueError) as err:
            notify.send_many([user_id(app, "alice"), "x" * 65, user_id(app, "bob")], "Hello", "World.")
        assert "user_ids[1]: user_id must be 1 to 64 characters long. Nothing was sent." == str(err.value)
        with pytest.raises(ValueError, match="user_ids must be a list"):
            notify.send_many(user_id(app, "alice"), "Hello", "World.")
        assert notify.send_many([], "Hello", "World.") == []
    assert notification_rows(app) == []
    assert received(sio, EVENT) == []
    sio.disconnect(NAMESPACE)


def test_many_batches_keep_the_order_on_every_database(any_database, make_app):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=any_database, **FAST)
    notify = app.extensions["demo"]["notify"]
    User, db = app.extensions["demo"]["User"], app.extensions["demo"]["db"]
    with app.app_context():
        db.session.execute(sa.insert(User), [{"username": f"bulk{i}", "password": "x", "is_admin": False}
                                             for i in range(1500)])
        db.session.commit()
        known = [str(u.id) for u in User.query.order_by(User.id)]
    users = [known[(i * 7919) % len(known)] for i in range(2 * INSERT_BATCH + 17)]  # unsorted, repeats
    with app.app_context():
        ids = notify.send_many(users, "Hello", "Everyone.")
    assert len(ids) == len(users) and len(set(ids)) == len(ids)
    by_id = {r["id"]: r["user_id"] for r in notification_rows(app)}
    assert [by_id[i] for i in ids] == users
    assert {r["delivered"] for r in notification_rows(app)} == {False}


def test_with_redis_every_offline_user_is_marked_pending_for_every_worker(make_app, redis_url, redis_prefix):
    config = dict(FAST, NOTIFY_EMERGENCY_STATE_BACKEND="redis", NOTIFY_EMERGENCY_REDIS_URL=redis_url,
                  NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=redis_prefix)
    app, _ = make_app(**config)
    notify = app.extensions["demo"]["notify"]
    users = [user_id(app, "alice"), user_id(app, "bob"), user_id(app, "admin")]
    with app.app_context():
        notify.send_many(users, "Hello", "Everyone.")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.smembers(f"{redis_prefix}:pending") == set(users)
    finally:
        client.close()
    ext = app.extensions["notify_emergency"]
    assert all(ext.state.may_have_pending(u) for u in users)

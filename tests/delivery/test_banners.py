"""``notify.broadcast()``: one banner row, shown on every page to everyone, escaped, scheduled."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from flask_notify_emergency.delivery.notifier import BANNER_EVENT
from flask_notify_emergency.models import utcnow
from tests.conftest import login, user_id
from tests.support.pages import BANNERS_URL, NAMESPACE, banner_ids, banner_rows, flashes, received
from tests.support.services import wait_until

XSS = "<script>alert('owned')</script>"


@pytest.fixture
def demo(make_app: Any) -> tuple[Any, Any, Any]:
    app, socketio = make_app(NOTIFY_EMERGENCY_ACK_TIMEOUT=0.5, NOTIFY_EMERGENCY_SWEEP_SECONDS=0.5)
    return app, socketio, app.extensions["demo"]["notify"]


def broadcast(app: Any, notify: Any, message: str, **kwargs: Any) -> int:
    with app.app_context():
        return int(notify.broadcast(message, **kwargs))


def logged_in(app: Any, name: str) -> Any:
    client = app.test_client()
    login(client, name)
    return client


def test_a_broadcast_is_one_row_that_every_user_and_anonymous_page_shows(demo):
    app, _, notify = demo
    clients = {name: logged_in(app, name) for name in ("admin", "alice", "bob")}
    bid = broadcast(app, notify, "Maintenance at 22:00 UTC.", level="info", title="Heads up")

    assert [b["id"] for b in banner_rows(app)] == [bid]  # one row, not one per user
    for name, client in clients.items():
        for _ in range(2):  # on every page, not once like a flash
            page = client.get("/").get_data(as_text=True)
            assert banner_ids(page) == [bid], name
            assert "Maintenance at 22:00 UTC." in page and "<strong>Heads up</strong>" in page
    anonymous = app.test_client().get("/login").get_data(as_text=True)
    assert banner_ids(anonymous) == [bid]
    api = app.test_client().get(BANNERS_URL).get_json()
    assert [(b["id"], b["message"], b["level"]) for b in api["banners"]] == [(bid, "Maintenance at 22:00 UTC.", "info")]


def test_banner_level_decides_its_role(demo):
    app, _, notify = demo
    broadcast(app, notify, "Outage.", level="danger")
    page = app.test_client().get("/login").get_data(as_text=True)
    assert 'class="notify-emergency-banner notify-emergency-level-danger" role="alert"' in page


def test_banner_text_is_escaped(demo):
    app, _, notify = demo
    broadcast(app, notify, XSS, title=XSS)
    page = logged_in(app, "alice").get("/").get_data(as_text=True)
    assert XSS not in page
    assert page.count("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;") == 2


def test_flashed_notification_text_is_escaped(demo):
    app, _, notify = demo
    client = logged_in(app, "alice")
    with app.app_context():
        notify.send(user_id(app, "alice"), XSS, XSS)
    page = client.get("/").get_data(as_text=True)
    assert XSS not in page
    assert flashes(page) == [f"{XSS}: {XSS}"]  # shown as text


@pytest.mark.parametrize("level", ["urgent", "", None, "WARNING"])
def test_bad_level_raises_and_stores_nothing(demo, level):
    app, _, notify = demo
    with app.app_context(), pytest.raises(ValueError, match="level must be one of info, warning, danger, critical"):
        notify.broadcast("Hello", level=level)
    assert banner_rows(app) == []


@pytest.mark.parametrize("kwargs,problem", [
    ({"message": ""}, "message must be a non-empty string"),
    ({"message": "ok", "title": "t" * 201}, "title must be a string of at most 200 characters"),
    ({"message": "ok", "starts_at": utcnow(), "ends_at": utcnow() - dt.timedelta(hours=1)},
     "ends_at must be after starts_at"),
])
def test_bad_broadcast_input_raises_and_stores_nothing(demo, kwargs, problem):
    app, _, notify = demo
    with app.app_context(), pytest.raises(ValueError, match=problem):
        notify.broadcast(kwargs.pop("message"), **kwargs)
    assert banner_rows(app) == []


def test_scheduled_banners_show_only_inside_their_window(demo):
    app, _, notify = demo
    now = utcnow()
    later = broadcast(app, notify, "Tomorrow.", starts_at=now + dt.timedelta(days=1))
    over = broadcast(app, notify, "Yesterday.", starts_at=now - dt.timedelta(days=2),
                     ends_at=now - dt.timedelta(days=1))
    live = broadcast(app, notify, "Today.", starts_at=now - dt.timedelta(hours=1),
                     ends_at=now + dt.timedelta(hours=1))

    page = app.test_client().get("/login").get_data(as_text=True)
    assert banner_ids(page) == [live]
    assert later in [b["id"] for b in banner_rows(app)] and over in [b["id"] for b in banner_rows(app)]
    assert "Tomorrow." not in page and "Yesterday." not in page


def test_a_scheduled_banner_appears_when_its_time_comes_and_goes_when_it_ends(demo):
    app, _, notify = demo
    client = app.test_client()
    start = utcnow() + dt.timedelta(seconds=1)
    bid = broadcast(app, notify, "Starting soon.", starts_at=start, ends_at=start + dt.timedelta(seconds=1))
    assert banner_ids(client.get("/login").get_data(as_text=True)) == []
    wait_until(lambda: banner_ids(client.get("/login").get_data(as_text=True)) == [bid], timeout=10,
               interval=0.1, message="the scheduled banner to appear")
    wait_until(lambda: banner_ids(client.get("/login").get_data(as_text=True)) == [], timeout=10,
               interval=0.1, message="the ended banner to disappear")


def test_a_banner_reaches_a_connected_page_live(demo):
    app, socketio, notify = demo
    client = logged_in(app, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    assert sio.is_connected(NAMESPACE)
    received(sio, BANNER_EVENT)
    bid = broadcast(app, notify, "Live <b>now</b>.", level="critical", title="Incident")
    got = received(sio, BANNER_EVENT)
    assert [(b["id"], b["message"], b["level"], b["title"]) for b in got] == \
        [(bid, "Live <b>now</b>.", "critical", "Incident")]
    sio.disconnect(NAMESPACE)


def test_a_scheduled_banner_is_not_pushed_live_before_it_starts(demo):
    app, socketio, notify = demo
    client = logged_in(app, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    received(sio, BANNER_EVENT)
    broadcast(app, notify, "Later.", starts_at=utcnow() + dt.timedelta(days=1))
    assert received(sio, BANNER_EVENT) == []
    sio.disconnect(NAMESPACE)


def test_a_banner_ending_on_a_whole_second_is_gone_right_after(demo):
    app, _, notify = demo
    client = app.test_client()
    ends = (utcnow() + dt.timedelta(seconds=2)).replace(microsecond=0)
    bid = broadcast(app, notify, "Until the second.", ends_at=ends)
    assert banner_ids(client.get("/login").get_data(as_text=True)) == [bid]
    wait_until(lambda: utcnow() > ends, timeout=5, message="the end time to pass")
    assert banner_ids(client.get("/login").get_data(as_text=True)) == []

"""Bad input at every edge gets a clear error and loses nothing: ``send()`` and ``broadcast()``
arguments, the poll reply, HTTP bodies and query parameters, CLI ids, acknowledgement frames,
and what a refused dashboard action leaves in the audit log."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Iterator

import pytest

from flask_notify_emergency.delivery.notifier import ACK_EVENT
from flask_notify_emergency.delivery.realtime import MAX_ACK_IDS
from tests.conftest import login, user_id
from tests.support.cli import invoke
from tests.support.databases import own_database
from tests.support.pages import (NAMESPACE, POLL_URL, banner_rows, csrf_from_page, flashes,
                                 notification_rows, poll)

API = "/emergency/api"


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def any_database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    with own_database(request.param, tmp_path) as url:
        yield url


def send(app: Any, to: Any, **kwargs: Any) -> int:
    notify = app.extensions["demo"]["notify"]
    with app.app_context():
        return int(notify.send(to, kwargs.pop("title", "Title"), kwargs.pop("message", "Message."), **kwargs))


def strict_json(text: str) -> Any:
    """Parse JSON as a browser does: no NaN or Infinity."""
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON a browser parses: {name}")
    return json.loads(text, parse_constant=refuse)


# -- send() ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    {"x": float("nan")}, {"deep": [1, {"y": float("inf")}]}, [float("-inf")], float("nan"),
], ids=["nan", "nested-inf", "list-minus-inf", "bare-nan"])
def test_send_refuses_nan_and_infinities_in_data_on_every_database(any_database, make_app, data):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=any_database)
    alice = user_id(app, "alice")
    with pytest.raises(ValueError, match="data must be JSON-serialisable, without NaN or infinities"):
        send(app, alice, data=data)
    assert notification_rows(app) == []
    # the same send with finite numbers goes through on that database
    nid = send(app, alice, data={"x": 1.5, "deep": [1, {"y": -2}]})
    assert notification_rows(app)[0]["id"] == nid and notification_rows(app)[0]["data"]["x"] == 1.5


@pytest.mark.parametrize("field", ["title", "message", "category"])
def test_send_refuses_a_nul_character_on_every_database(any_database, make_app, field):
    """PostgreSQL cannot store one: every database refuses it alike, before anything is stored."""
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=any_database)
    alice = user_id(app, "alice")
    with pytest.raises(ValueError, match=f"{field} must not contain NUL characters"):
        send(app, alice, **{field: "before\x00after"})
    assert notification_rows(app) == []
    with app.app_context(), pytest.raises(ValueError, match="message must not contain NUL characters"):
        app.extensions["demo"]["notify"].broadcast("down\x00time")
    assert banner_rows(app) == []


def test_the_longest_texts_the_limits_allow_are_stored_on_every_database(any_database, make_app):
    """Each length limit set to its highest: a title, a message and a category that long (in
    characters of four bytes each) are stored whole, and a banner title as long as its column."""
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=any_database, NOTIFY_EMERGENCY_TITLE_MAX_LENGTH=500,
                      NOTIFY_EMERGENCY_MESSAGE_MAX_LENGTH=16000, NOTIFY_EMERGENCY_CATEGORY_MAX_LENGTH=64)
    title, message, category = "\U0001F514" * 500, "\U0001F4E8" * 16000, "c" * 64
    nid = send(app, user_id(app, "alice"), title=title, message=message, category=category)
    row = notification_rows(app)[0]
    assert (row["id"], row["title"], row["message"], row["category"]) == (nid, title, message, category)
    notify = app.extensions["demo"]["notify"]
    with app.app_context():
        with pytest.raises(ValueError, match="title must be a string of at most 200 characters"):
            notify.broadcast("Maintenance tonight.", title="t" * 201)
        notify.broadcast("Maintenance tonight.", title="t" * 200)
    assert [b["title"] for b in banner_rows(app)] == ["t" * 200]


@pytest.mark.parametrize("key,value", [("TITLE_MAX_LENGTH", 501), ("MESSAGE_MAX_LENGTH", 16001),
                                       ("CATEGORY_MAX_LENGTH", 65), ("TITLE_MAX_LENGTH", 0)])
def test_a_length_limit_longer_than_its_column_is_refused_at_start(make_app, key, value):
    from flask_notify_emergency import ConfigError

    with pytest.raises(ConfigError, match=f"NOTIFY_EMERGENCY_{key}.*must be a whole number from 1 to"):
        make_app(**{f"NOTIFY_EMERGENCY_{key}": value})


@pytest.mark.parametrize("expires_in", [-1, -0.5, float("nan"), float("inf"), "60", True, [60], 10**12])
def test_send_refuses_an_expiry_that_is_not_a_finite_non_negative_number(make_app, expires_in):
    app, _ = make_app()
    with pytest.raises(ValueError, match="expires_in"):
        send(app, user_id(app, "alice"), expires_in=expires_in)
    assert notification_rows(app) == []


def test_send_takes_zero_expiry_as_never_and_a_float_as_seconds(make_app):
    app, _ = make_app()
    alice = user_id(app, "alice")
    never = send(app, alice, expires_in=0)
    soon = send(app, alice, expires_in=90.5)
    rows = {r["id"]: r for r in notification_rows(app)}
    assert rows[never]["expires_at"] is None
    left = (rows[soon]["expires_at"] - rows[soon]["created_at"]).total_seconds()
    assert 90 <= left <= 91


@pytest.mark.parametrize("spelling", ["0{id}", "{id}", " {id} ", "arabic-indic"])
def test_another_spelling_of_a_user_id_reaches_that_user(make_app, spelling):
    app, _ = make_app()
    alice = user_id(app, "alice")
    given = ("".join(chr(0x660 + int(d)) for d in alice) if spelling == "arabic-indic"
             else spelling.format(id=alice))
    send(app, given, title="Spelled", message="differently")
    assert [r["user_id"] for r in notification_rows(app)] == [alice]  # what the session's get_id() says
    client = app.test_client()
    login(client, "alice")
    assert flashes(client.get("/").get_data(as_text=True)) == ["Spelled: differently"]


@pytest.mark.parametrize("given", ["\u00b2", "2.0", "-2", "9" * 30])
def test_a_user_id_no_user_loads_from_is_refused(make_app, given):
    app, _ = make_app()
    with pytest.raises(ValueError, match="no such user"):
        send(app, given)
    assert notification_rows(app) == []


def test_a_huge_numeric_user_id_is_refused_on_every_database(any_database, make_app):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=any_database)
    with pytest.raises(ValueError, match="no such user"):
        send(app, "9" * 30)
    assert notification_rows(app) == []
    code = invoke(app, "send-user-notification", "--message", "hi", "--target", "user:" + "9" * 30).exit_code
    assert code in (1, 2)
    assert notification_rows(app) == []


@pytest.mark.parametrize("url", [
    "//evil.example/x", "/\\evil.example", "/\\/evil.example", "\\\\evil.example", "javascript:alert(1)",
    "JaVaScRiPt:alert(1)", "data:text/html,hi", "http://", "https:///path", "/a b", "/tab\there",
    "ftp://example.com/", "example.com/x", "",
])
def test_action_url_refuses_anything_but_a_local_path_or_an_http_url(make_app, url):
    app, _ = make_app()
    with pytest.raises(ValueError, match="action_url must be a path on this site"):
        send(app, user_id(app, "alice"), action_url=url)
    assert notification_rows(app) == []


@pytest.mark.parametrize("url", ["/", "/files/7?tab=alt#top", "https://example.com/x", "HTTP://example.com"])
def test_action_url_accepts_local_paths_and_http_urls(make_app, url):
    app, _ = make_app()
    send(app, user_id(app, "alice"), action_url=url)
    assert notification_rows(app)[0]["action_url"] == url


# -- broadcast() ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change,problem", [
    ({"starts_at": "2030-01-01T00:00"}, "starts_at must be a datetime"),
    ({"ends_at": 1893456000}, "ends_at must be a datetime"),
    ({"starts_at": dt.date(2030, 1, 1)}, "starts_at must be a datetime"),
    ({"ends_at": dt.datetime(1, 1, 1)}, "ends_at must be between the years"),
    ({"starts_at": dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))},
     "starts_at and ends_at must be times a database can store"),
], ids=["str", "int", "date", "year-1", "overflowing-zone"])
def test_broadcast_refuses_times_that_are_not_storable_datetimes(make_app, change, problem):
    app, _ = make_app()
    notify = app.extensions["demo"]["notify"]
    with app.app_context():
        with pytest.raises(ValueError, match=problem):
            notify.broadcast("Maintenance tonight.", **change)
    assert banner_rows(app) == []


def test_broadcast_stores_an_aware_time_as_utc(make_app):
    app, _ = make_app()
    notify = app.extensions["demo"]["notify"]
    start = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with app.app_context():
        notify.broadcast("Later.", starts_at=start)
    assert banner_rows(app)[0]["starts_at"] == dt.datetime(2030, 1, 1, 10, 0)


# -- the poll reply ---------------------------------------------------------------------------------

def test_a_row_the_poll_reply_cannot_carry_stays_undelivered_and_the_rest_arrive(make_app):
    """A row written before send() refused NaN (SQLite stores it): the reply is built before
    any row is marked delivered, so it holds the good rows and the bad one is not lost."""
    app, _ = make_app()
    ext = app.extensions["notify_emergency"]
    alice = user_id(app, "alice")
    client = app.test_client()
    login(client, "alice")
    token = csrf_from_page(client)
    good = [send(app, alice, title=f"good {i}") for i in range(2)]
    bad = ext.store.create({"user_id": alice, "title": "bad", "message": "m", "data": {"x": math.nan},
                            "created_at": notification_rows(app)[0]["created_at"], "delivered": False})
    good.append(send(app, alice, title="good 2"))
    reply = poll(client, token)
    assert reply.status_code == 200
    got = strict_json(reply.get_data(as_text=True))["notifications"]
    assert sorted(n["id"] for n in got) == sorted(good)
    # the page confirms what it showed, as the client script does
    confirmed = client.post("/emergency/api/notifications/ack", json={"ids": [n["id"] for n in got]},
                            headers={"X-CSRF-Token": token})
    assert confirmed.status_code == 200, confirmed.get_data(as_text=True)
    rows = {r["id"]: r for r in notification_rows(app)}
    assert rows[bad]["delivered"] is False and all(rows[n]["delivered"] for n in good)
    assert strict_json(poll(client, token).get_data(as_text=True))["notifications"] == []


# -- HTTP ---------------------------------------------------------------------------------------------

def admin_client(app: Any) -> tuple[Any, str]:
    client = app.test_client()
    login(client, "admin")
    return client, csrf_from_page(client)


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "7", "null", "true", "{not json"])
@pytest.mark.parametrize("path", [POLL_URL, f"{API}/emergency/activate", f"{API}/banners/admin",
                                  "/emergency/actions/activate"])
def test_a_json_body_that_is_not_an_object_gets_400_and_changes_nothing(make_app, body, path):
    app, _ = make_app()
    ext = app.extensions["notify_emergency"]
    client, token = admin_client(app)
    send(app, user_id(app, "admin"))
    response = client.post(path, data=body, content_type="application/json",
                           headers={"X-CSRF-Token": token, "Accept": "application/json"})
    assert response.status_code == 400
    assert "The JSON body must be an object" in response.get_data(as_text=True)
    assert ext.control.mode == "normal"
    assert banner_rows(app) == []
    assert [r["delivered"] for r in notification_rows(app)] == [False]


@pytest.mark.parametrize("query,problem", [
    ("page=-1", "page must be between 1 and 1000000"), ("page=0", "page must be between 1"),
    ("page=" + "9" * 30, "page must be between 1 and 1000000"),
    ("page=" + "9" * 5000, "page must be a whole number"),
    ("per_page=-5", "per_page must be between 1 and 100"), ("per_page=1000000", "per_page must be between 1 and 100"),
])
@pytest.mark.parametrize("listing", ["events", "notifications"])
def test_huge_or_negative_paging_gets_400_naming_the_parameter(make_app, listing, query, problem):
    app, _ = make_app()
    client, _ = admin_client(app)
    response = client.get(f"{API}/{listing}?{query}")
    assert response.status_code == 400
    assert problem in response.get_json()["error"]
    page = client.get(f"/emergency/{listing}?{query}")
    assert page.status_code == 400 and problem in page.get_data(as_text=True)


@pytest.mark.parametrize("field,value", [
    ("starts_at", "0001-01-01T00:00+01:00"), ("ends_at", "9999-12-31T23:59-10:00"),
    ("starts_at", "1900-01-01T00:00"), ("ends_at", "9999-12-31T23:59"),
])
def test_out_of_range_banner_times_get_400_and_store_nothing(make_app, field, value):
    app, _ = make_app()
    client, token = admin_client(app)
    response = client.post(f"{API}/banners/admin", json={"message": "Soon.", field: value},
                           headers={"X-CSRF-Token": token})
    assert response.status_code == 400
    assert f"{field} must be between the years 1970 and 9998" in response.get_json()["error"]
    form = client.post("/emergency/banners", data={"csrf_token": token, "message": "Soon.", field: value})
    assert form.status_code == 400
    assert banner_rows(app) == []


@pytest.mark.parametrize("path,method", [
    ("/emergency/events/99999999999999999999", "GET"), (f"{API}/events/99999999999999999999", "GET"),
    (f"{API}/banners/admin/99999999999999999999/dismiss", "POST"),
    ("/emergency/banners/99999999999999999999/dismiss", "POST"),
])
def test_huge_ids_in_urls_name_no_row_instead_of_failing(make_app, path, method):
    app, _ = make_app()
    client, token = admin_client(app)
    response = client.open(path, method=method, data={"csrf_token": token}, headers={"X-CSRF-Token": token})
    assert response.status_code in (400, 404)


def test_a_refused_action_keeps_a_bounded_excerpt_of_the_request_in_the_audit_log(make_app):
    app, _ = make_app()
    client, token = admin_client(app)
    huge = "x" * (10 * 1024 * 1024)
    fields = {f"z{i:02d}": i for i in range(40)}  # (the test client sends keys sorted: these come last)
    response = client.post(f"{API}/banners/admin", json={"message": "Soon.", "starts_at": huge, **fields},
                           headers={"X-CSRF-Token": token})
    assert response.status_code == 400
    assert len(response.get_json()["error"]) < 300
    entry = client.get(f"{API}/audit").get_json()["items"][0]
    assert entry["action"] == "post-banner" and entry["outcome"] == "refused"
    stored = json.dumps(entry)
    assert len(stored) < 10_000, "the refused request was copied whole"
    assert entry["arguments"]["message"] == "Soon."
    assert entry["arguments"]["starts_at"].startswith("x" * 200) and "10485760 characters" in entry["arguments"]["starts_at"]
    assert entry["arguments"]["(more fields)"] == 42 - 20
    assert "csrf_token" not in entry["arguments"]


# -- acknowledgement frames -------------------------------------------------------------------------------

def test_an_ack_frame_of_more_than_200_ids_is_refused_whole_and_200_are_taken(make_app):
    app, socketio = make_app()
    alice = user_id(app, "alice")
    client = app.test_client()
    login(client, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    ids = [send(app, alice, title=f"n{i}") for i in range(MAX_ACK_IDS + 1)]
    answer = sio.emit(ACK_EVENT, {"ids": ids}, namespace=NAMESPACE, callback=True)
    assert answer["ok"] is False and f"at most {MAX_ACK_IDS} ids" in answer["error"]
    assert not any(r["delivered"] for r in notification_rows(app))
    junk = ["9" * 40, 2**63, -1, None, True, 1.5, "abc"]
    answer = sio.emit(ACK_EVENT, {"ids": ids[:MAX_ACK_IDS - len(junk)] + junk}, namespace=NAMESPACE, callback=True)
    assert answer == {"ok": True, "acknowledged": ids[:MAX_ACK_IDS - len(junk)]}
    assert sio.emit(ACK_EVENT, {"ids": "1,2"}, namespace=NAMESPACE, callback=True)["ok"] is False
    sio.disconnect(NAMESPACE)


# -- CLI --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,option", [
    (["document-incident", "--event-id", "9" * 30], "--event-id"),
    (["document-incident", "--event-id", "emergency_20300101_" + "9" * 30], "--event-id"),
    (["document-incident", "--event-id", "\u00b2"], "--event-id"),
    (["create-incident", "--title", "t", "--priority", "high", "--event-id", "9" * 30], "--event-id"),
    (["evaluate-drill", "--drill-id", "9" * 30], "--drill-id"),
    (["evaluate-drill", "--drill-id", "9" * 5000], "--drill-id"),
])
def test_huge_ids_on_the_command_line_exit_2_naming_the_option(make_app, args, option):
    app, _ = make_app()
    result = invoke(app, *args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "Traceback" not in result.output

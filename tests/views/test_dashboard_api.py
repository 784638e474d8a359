"""The dashboard's JSON API and forms: metrics computed right on every database, actions
that do what they say (and nothing on bad input), filters, redaction, the audit trail."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Iterator

import pytest

from flask_notify_emergency.models import utcnow
from tests.conftest import login, user_id
from tests.support.databases import own_database
from tests.support.pages import banner_rows, csrf_from_page

API = "/emergency/api"


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A database of this test's own (created and dropped), on each engine."""
    with own_database(request.param, tmp_path) as url:
        yield url


def admin_client(app: Any) -> tuple[Any, str]:
    client = app.test_client()
    login(client, "admin")
    return client, csrf_from_page(client)


def post(client: Any, token: str, path: str, **body: Any) -> Any:
    return client.post(API + path, json=body, headers={"X-CSRF-Token": token})


def test_overview_metrics_are_computed_from_stored_rows(own_database_url: str, make_app: Any) -> None:
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=own_database_url)
    ext = app.extensions["notify_emergency"]
    now = utcnow().replace(microsecond=0)
    ago = lambda **kw: now - dt.timedelta(**kw)  # noqa: E731
    n = ext.models.Notification.__table__
    rows = ([(ago(hours=1, minutes=5), "realtime")] * 4 + [(ago(hours=2), "flash")] * 2 + [(ago(hours=3), "poll")]
            + [(ago(minutes=30), None)] * 3 + [(ago(days=3), "realtime")] * 5)
    e = ext.models.EmergencyEvent.__table__
    events = [  # (started, detected, resolved, recovered)
        (ago(hours=2), ago(hours=2) + dt.timedelta(seconds=60), ago(hours=2) + dt.timedelta(seconds=660), True),
        (ago(hours=5), ago(hours=5) + dt.timedelta(seconds=120), ago(hours=5) + dt.timedelta(seconds=1320), False),
        (ago(minutes=10, seconds=30), ago(minutes=10), None, None),
        (ago(days=3), ago(days=3), ago(days=3) + dt.timedelta(seconds=5), True),
    ]
    with ext.engine.begin() as conn:
        conn.execute(n.insert(), [
            {"user_id": "2", "title": "t", "message": "m", "created_at": at, "delivered": ch is not None,
             "delivered_at": at if ch else None, "channel": ch} for at, ch in rows])
        conn.execute(e.insert(), [
            {"level": 2, "failure_type": "manual", "status": "resolved" if res else "open", "reason": "r",
             "started_at": st, "detected_at": det, "resolved_at": res, "recovered": rec, "actions": []}
            for st, det, res, rec in events])
    client, _ = admin_client(app)

    day = client.get(f"{API}/overview?window=24h").get_json()
    d = day["delivery"]
    assert (d["attempted"], d["delivered"], d["undelivered"]) == (10, 7, 3)
    assert d["success_rate"] == 0.7 and d["realtime_share"] == 0.4
    assert d["by_channel"] == {"realtime": 4, "flash": 2, "poll": 1, "undelivered": 3, "other": 0}
    series = d["series"]
    assert {c: sum(v) for c, v in series["channels"].items()} == {"realtime": 4, "flash": 2, "poll": 1, "undelivered": 3}
    starts = [dt.datetime.fromisoformat(s.rstrip("Z")) for s in series["starts"]]
    hit = series["channels"]["realtime"].index(4)
    assert starts[hit] <= ago(hours=1, minutes=5) < starts[hit] + dt.timedelta(seconds=series["bucket_seconds"])
    ev = day["events"]
    assert (ev["count"], ev["open"], ev["resolved"], ev["recovered"]) == (3, 1, 2, 1)
    assert ev["recovery_success_rate"] == 0.5
    assert ev["mttd_seconds"] == pytest.approx((60 + 120 + 30) / 3, abs=1)
    assert ev["mttr_seconds"] == pytest.approx((600 + 1200) / 2, abs=1)
    assert day["backlog"]["undelivered"] == 3
    assert day["database"]["ok"] is True and day["database"]["latency_ms"] >= 0
    assert day["connections"]["connected_users"] == 0
    assert day["errors"] == {}

    hour = client.get(f"{API}/overview?window=1h").get_json()
    assert (hour["delivery"]["attempted"], hour["delivery"]["success_rate"]) == (3, 0.0)
    assert hour["events"]["count"] == 1 and hour["events"]["recovery_success_rate"] is None
    month = client.get(f"{API}/overview?window=30d").get_json()
    assert month["delivery"]["attempted"] == 15 and month["events"]["count"] == 4

    bad = client.get(f"{API}/overview?window=2h")
    assert bad.status_code == 400 and "window must be one of 1h, 24h, 7d, 30d" in bad.get_json()["error"]


def test_activate_and_deactivate_need_a_reason_and_are_audited(example: tuple[Any, Any]) -> None:
    app, _ = example
    ext = app.extensions["notify_emergency"]
    client, token = admin_client(app)
    for body, words in (({"reason": "  "}, "a reason is required"), ({"reason": "x", "level": "9"}, "unknown emergency level")):
        response = post(client, token, "/emergency/activate", **body)
        assert response.status_code == 400 and words in response.get_json()["error"]
    with app.app_context():
        assert ext.control.mode == "normal"
    assert client.get(f"{API}/events").get_json()["items"] == []

    response = post(client, token, "/emergency/activate", reason="socket queue down", level=2)
    assert response.status_code == 200, response.get_json()
    event = response.get_json()["event"]
    assert event["level"] == 2 and event["reason"] == "socket queue down"
    with app.app_context():
        assert ext.control.mode == "emergency"

    assert post(client, token, "/emergency/deactivate").status_code == 400
    response = post(client, token, "/emergency/deactivate", reason="queue back", force=True)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["event"]["status"] == "resolved"

    detail = client.get(f"{API}/events/{event['id']}").get_json()
    assert [a["action"] for a in detail["event"]["actions"]] == ["activate-emergency", "deactivate-emergency"]
    admin = f"admin (id {user_id(app, 'admin')})"
    audited = {(a["action"], a["outcome"], a["actor"], a["source"]) for a in detail["audit"]}
    assert ("activate-emergency", "ok", admin, "web 127.0.0.1") in audited
    assert ("deactivate-emergency", "ok", admin, "web 127.0.0.1") in audited
    refused = [a for a in client.get(f"{API}/audit").get_json()["items"] if a["outcome"] == "refused"]
    assert {a["action"] for a in refused} == {"activate-emergency", "deactivate-emergency"}
    assert all("csrf_token" not in (a["arguments"] or {}) for a in refused)


def test_banners_are_validated_scheduled_and_dismissed(example: tuple[Any, Any]) -> None:
    app, _ = example
    client, token = admin_client(app)
    for body, words in (({"level": "loud", "message": "x"}, "level must be one of"),
                        ({"level": "info", "message": ""}, "needs a message"),
                        ({"level": "info", "message": "x", "starts_at": "tomorrow"}, "starts_at must be a date"),
                        ({"level": "info", "message": "x", "starts_at": "2030-01-02T10:00",
                          "ends_at": "2030-01-01T10:00"}, "ends_at must be after starts_at")):
        response = post(client, token, "/banners/admin", **body)
        assert response.status_code == 400 and words in response.get_json()["error"], response.get_json()
    assert banner_rows(app) == []

    later = post(client, token, "/banners/admin", level="info", title="Maintenance", message="Tonight",
                 starts_at="2099-01-01T22:00", ends_at="2099-01-02T02:00")
    now = post(client, token, "/banners/admin", level="danger", message="Delays now")
    assert later.status_code == 200 and now.status_code == 200
    listed = {b["id"]: b["status"] for b in client.get(f"{API}/banners/admin").get_json()["banners"]}
    assert listed == {later.get_json()["banner_id"]: "scheduled", now.get_json()["banner_id"]: "active"}
    public = app.test_client().get("/emergency/api/banners").get_json()["banners"]
    assert [b["message"] for b in public] == ["Delays now"]

    bid = now.get_json()["banner_id"]
    assert post(client, token, f"/banners/admin/{bid}/dismiss").status_code == 200
    again = post(client, token, f"/banners/admin/{bid}/dismiss")
    assert again.status_code == 400 and "already dismissed" in again.get_json()["error"]
    assert app.test_client().get("/emergency/api/banners").get_json()["banners"] == []


def test_fallback_pauses_realtime_and_health_check_runs(example: tuple[Any, Any]) -> None:
    app, _ = example
    ext = app.extensions["notify_emergency"]
    client, token = admin_client(app)
    assert post(client, token, "/fallback").status_code == 400
    assert post(client, token, "/fallback", enabled=True).status_code == 200
    with app.app_context():
        assert ext.control.paused()["realtime"] is True
    overview = client.get(f"{API}/overview").get_json()
    assert overview["paused"]["realtime"] is True
    assert post(client, token, "/fallback", enabled=False).status_code == 200
    with app.app_context():
        assert ext.control.paused()["realtime"] is False

    report = post(client, token, "/health/run")
    assert report.status_code == 200, report.get_json()
    assert set(report.get_json()["report"]["checks"]) >= {"database", "realtime"}
    health = client.get(f"{API}/overview").get_json()["health"]
    assert health["available"] is True and isinstance(health["score"], int)


def test_rollback_needs_the_typed_word_then_restore_brings_real_time_back(example: tuple[Any, Any]) -> None:
    app, _ = example
    ext = app.extensions["notify_emergency"]
    client, token = admin_client(app)
    status = client.get(f"{API}/rollback/status").get_json()
    assert status["available"] is True and status["mode"] == "normal"
    assert {c["name"] for c in status["checklist"]} >= {"backup", "no-rollback-in-progress"}

    for body in ({"reason": "test", "confirm": "rollback"}, {"reason": "test"}, {"confirm": "ROLLBACK"}):
        response = post(client, token, "/rollback", **body)
        assert response.status_code == 400, body
    with app.app_context():
        assert ext.control.read("mode", "normal") == "normal"

    dry = post(client, token, "/rollback", reason="rehearse", confirm="ROLLBACK", dry_run=True)
    assert dry.status_code == 200 and dry.get_json()["result"]["status"] == "dry-run"
    with app.app_context():
        assert ext.control.read("mode", "normal") == "normal"

    done = post(client, token, "/rollback", reason="queue lost for 40 minutes", confirm="ROLLBACK")
    assert done.status_code == 200, done.get_json()
    with app.app_context():
        assert ext.control.read("mode") == "legacy"
    assert client.get(f"{API}/rollback/status").get_json()["mode"] == "legacy"

    assert post(client, token, "/restore", confirm="restore").status_code == 400
    back = post(client, token, "/restore", confirm="RESTORE", reason="queue is back", force=True)
    assert back.status_code == 200, back.get_json()
    with app.app_context():
        assert ext.control.read("mode") == "normal"
    rate = client.get(f"{API}/overview").get_json()["rollback"]
    assert rate["available"] is True and rate["success_rate"] == 1.0


def test_notifications_are_filtered_and_paged(example: tuple[Any, Any]) -> None:
    app, _ = example
    ext = app.extensions["notify_emergency"]
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    notify = app.extensions["demo"]["notify"]
    with app.app_context():
        for i in range(5):
            notify.send(alice, f"alice {i}", "m")
        for i in range(3):
            notify.send(bob, f"bob {i}", "m")
        offered = [int(r["id"]) for r in ext.store.claim(alice, 2, "poll")]
        ext.store.acknowledge_many([(nid, alice) for nid in offered])  # the page confirmed what the poll showed
    client, _ = admin_client(app)

    def titles(query: str) -> list[str]:
        response = client.get(f"{API}/notifications?{query}")
        assert response.status_code == 200, response.get_json()
        return [n["title"] for n in response.get_json()["items"]]

    assert titles(f"user={alice}&state=delivered") == ["alice 1", "alice 0"]
    assert titles(f"user={alice}&state=undelivered") == ["alice 4", "alice 3", "alice 2"]
    assert titles("channel=poll") == ["alice 1", "alice 0"]
    first = client.get(f"{API}/notifications?per_page=3").get_json()
    assert first["has_next"] is True and len(first["items"]) == 3
    last = client.get(f"{API}/notifications?per_page=3&page=3").get_json()
    assert last["has_next"] is False and [n["title"] for n in last["items"]] == ["alice 1", "alice 0"]
    for query, words in (("state=lost", "state must be one of"), ("channel=pigeon", "channel must be one of"),
                         ("per_page=1000", "per_page must be between 1 and 100"),
                         ("state=undelivered&channel=poll", "an undelivered notification has no channel")):
        response = client.get(f"{API}/notifications?{query}")
        assert response.status_code == 400 and words in response.get_json()["error"]
    page = client.get(f"/emergency/notifications?user={bob}").get_data(as_text=True)
    assert page.count("bob ") == 3 and "alice 0" not in page


def test_settings_are_redacted(make_app: Any) -> None:
    app, _ = make_app(NOTIFY_EMERGENCY_SMS_GATEWAY_URL="https://gw:s3cr3t-pass@sms.example/send")
    client, _ = admin_client(app)
    settings = client.get(f"{API}/settings").get_json()["settings"]
    assert settings["NOTIFY_EMERGENCY_SMS_GATEWAY_URL"] == "https://gw:***@sms.example/send"
    page = client.get("/emergency/settings").get_data(as_text=True)
    assert "s3cr3t-pass" not in page and "gw:***@sms.example" in page
    assert "SECRET_KEY" not in settings


def test_forms_flash_what_happened_and_keep_input_on_refusal(example: tuple[Any, Any]) -> None:
    app, _ = example
    client, token = admin_client(app)
    refused = client.post("/emergency/banners", data={"csrf_token": token, "level": "info", "message": "",
                                                       "title": "Kept title"})
    assert refused.status_code == 400
    html = refused.get_data(as_text=True)
    assert "a banner needs a message" in html and 'value="Kept title"' in html
    done = client.post("/emergency/actions/activate", data={"csrf_token": token, "reason": "form test", "level": "3"})
    assert done.status_code == 302 and done.headers["Location"] == "/emergency/"
    page = client.get("/emergency/").get_data(as_text=True)
    assert re.search(r"Emergency mode is on: event #\d+, level 3 \(medium\)", page)
    assert "form test" in page


def test_auto_recover_runs_the_recovery_plan_and_is_audited(example: tuple[Any, Any]) -> None:
    app, _ = example
    client, token = admin_client(app)
    response = post(client, token, "/recovery/auto")
    assert response.status_code == 200, response.get_json()
    result = response.get_json()["result"]
    assert result["status"] in ("healthy", "recovered", "escalated", "manual")
    assert response.get_json()["message"].startswith(f"Automatic recovery: {result['status']}")
    entries = [a for a in client.get(f"{API}/audit").get_json()["items"] if a["action"] == "auto-recover"]
    assert len(entries) == 1 and entries[0]["actor"] == f"admin (id {user_id(app, 'admin')})"
    assert entries[0]["source"] == "web 127.0.0.1"

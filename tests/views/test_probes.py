"""Load-balancer probes and the admins' health report."""

from __future__ import annotations

from tests.conftest import login


def test_liveness_and_readiness_answer_anyone_without_details(client):
    live = client.get("/emergency/livez")
    ready = client.get("/emergency/readyz")
    assert (live.status_code, live.get_json()) == (200, {"status": "alive"})
    assert (ready.status_code, ready.get_json()) == (
        200, {"status": "ready", "monitor": "never", "monitor_age_seconds": None})


def test_strict_readiness_needs_a_fresh_monitor_heartbeat(make_app):
    from tests.support.services import wait_until

    app, _ = make_app(NOTIFY_EMERGENCY_READYZ_REQUIRE_MONITOR=True, NOTIFY_EMERGENCY_MONITOR_INTERVAL=0.2)
    client = app.test_client()
    assert client.get("/emergency/readyz").status_code == 503  # no monitor ever ran
    app.extensions["notify_emergency"].monitor.tick()
    ready = client.get("/emergency/readyz")
    assert ready.status_code == 200 and ready.get_json()["monitor"] == "fresh"
    assert ready.get_json()["monitor_age_seconds"] < 0.6
    stale = wait_until(lambda: (r := client.get("/emergency/readyz")).status_code == 503 and r, timeout=5,
                       message="readiness to fail once the heartbeat is three intervals old")
    assert stale.get_json()["monitor"] == "stale"
    app.config["NOTIFY_EMERGENCY_READYZ_REQUIRE_MONITOR"] = False  # the default: the database decides
    assert client.get("/emergency/readyz").status_code == 200


def test_the_dashboard_shows_the_heartbeat_and_says_when_no_monitor_runs(make_app):
    from tests.support.services import wait_until

    app, _ = make_app(NOTIFY_EMERGENCY_MONITOR_INTERVAL=0.2)
    admin = app.test_client()
    login(admin, "admin")
    app.extensions["notify_emergency"].monitor.tick()
    page = admin.get("/emergency/").get_data(as_text=True)
    assert 'data-monitor="fresh"' in page and "ne-monitor-stale" not in page
    for path in ("/emergency/", "/emergency/events", "/emergency/settings"):
        page = wait_until(lambda: (p := admin.get(path).get_data(as_text=True)) and "ne-monitor-stale" in p and p,
                          timeout=5, message=f"{path} to say no monitor runs")
        assert "No monitor is running" in page and 'data-monitor="stale"' in page


def test_the_health_report_is_for_admins_only(example):
    app, _ = example
    anonymous, user, admin = app.test_client(), app.test_client(), app.test_client()
    login(user, "alice")
    login(admin, "admin")
    assert anonymous.get("/emergency/api/health").status_code == 401
    assert user.get("/emergency/api/health").status_code == 403
    report = admin.get("/emergency/api/health")
    assert report.status_code in (200, 503)
    body = report.get_json()
    assert {"status", "score", "checks"} <= set(body)
    assert {"database", "realtime", "redis", "sessions", "resources"} <= set(body["checks"])
    assert body["checks"]["database"]["ok"] is True

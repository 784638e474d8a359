"""Load-balancer probes and the admins' health report."""

from __future__ import annotations

from tests.conftest import login


def test_liveness_and_readiness_answer_anyone_without_details(client):
    live = client.get("/emergency/livez")
    ready = client.get("/emergency/readyz")
    assert (live.status_code, live.get_json()) == (200, {"status": "alive"})
    assert (ready.status_code, ready.get_json()) == (200, {"status": "ready"})


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

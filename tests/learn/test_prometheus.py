"""Prometheus metrics at ``<prefix>/metrics``: who may scrape, what the numbers say, and that
two served worker processes (prometheus_client's multiprocess mode) report the same totals."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import requests
import socketio
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_notify_emergency.learn.prometheus import make_wsgi_app
from flask_notify_emergency.respond import emergency
from tests.conftest import login, user_id
from tests.support.apps import ROOT, ServedApp
from tests.support.pages import NAMESPACE
from tests.support.services import free_port, wait_until

TOKEN = "scrape-me-7f3a"
METRICS = "/emergency/metrics"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


# -- who may scrape --------------------------------------------------------------------------
def test_a_scraper_needs_the_token_or_an_admin_session(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_METRICS_TOKEN=TOKEN)
    anonymous = app.test_client()
    response = anonymous.get(METRICS)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "NOTIFY_EMERGENCY_METRICS_TOKEN" in response.get_json()["error"]
    assert anonymous.get(METRICS, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anonymous.get(METRICS, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    scraped = anonymous.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200 and scraped.content_type.startswith("text/plain; version=0.0.4")
    assert value(samples(scraped.get_data(as_text=True)), "notify_emergency_mode", mode="normal") == 1.0

    user = app.test_client()
    login(user, "alice")
    assert user.get(METRICS).status_code == 403
    admin = app.test_client()
    login(admin, "admin")
    assert admin.get(METRICS).status_code == 200


def test_without_a_configured_token_no_bearer_gets_in(make_app):
    app, _ = make_app()
    assert app.test_client().get(METRICS, headers={"Authorization": "Bearer "}).status_code == 401
    assert app.test_client().get(METRICS, headers={"Authorization": "Bearer None"}).status_code == 401


def test_the_metrics_can_be_mounted_where_the_host_wants(make_app):
    app, _ = make_app()
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/internal/metrics": make_wsgi_app(app)})  # type: ignore[method-assign]
    response = app.test_client().get("/internal/metrics")
    assert response.status_code == 200
    assert value(samples(response.get_data(as_text=True)), "notify_emergency_backlog_size") == 0.0
    openmetrics = app.test_client().get("/internal/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.get_data(as_text=True).rstrip().endswith("# EOF")


# -- what the numbers say --------------------------------------------------------------------
def test_counters_and_cluster_facts_follow_what_happens(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_METRICS_TOKEN=TOKEN)
    ext = app.extensions["notify_emergency"]
    scraper = app.test_client()

    def scrape() -> dict[Any, float]:
        return samples(scraper.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True))

    alice = user_id(app, "alice")
    with app.app_context():
        ext.dispatcher.send(alice, "One", "offline: waits for her next page")
        ext.dispatcher.send(alice, "Two", "offline too")
    found = scrape()
    assert value(found, "notify_emergency_notifications_sent_total", channel="fallback") == 2.0
    assert value(found, "notify_emergency_notifications_sent_total", channel="realtime") == 0.0
    assert value(found, "notify_emergency_fallbacks_total", reason="offline") == 2.0
    assert value(found, "notify_emergency_backlog_size") == 2.0
    assert (value(found, "notify_emergency_backlog_oldest_age_seconds") or 0) > 0

    page = app.test_client()
    login(page, "alice")
    assert "One" in page.get("/").get_data(as_text=True)  # flashed: offered, still in the backlog
    assert value(scrape(), "notify_emergency_backlog_size") == 2.0
    page.get("/")  # the browser's next request confirms what the page showed: delivered by flash
    found = scrape()
    assert value(found, "notify_emergency_notifications_delivered_total", channel="flash") == 2.0
    assert value(found, "notify_emergency_backlog_size") == 0.0
    assert value(found, "notify_emergency_backlog_oldest_age_seconds") == 0.0

    with app.app_context():
        emergency.activate(ext, reason="metrics", triggered_by="test", level=2)
        ext.dispatcher.send(alice, "Three", "in emergency mode")
        ext.breaker.trip()
    found = scrape()
    assert value(found, "notify_emergency_mode", mode="emergency") == 1.0
    assert value(found, "notify_emergency_mode", mode="normal") == 0.0
    assert value(found, "notify_emergency_open_emergencies", level="2", level_name="high") == 1.0
    assert value(found, "notify_emergency_open_emergencies", level="1", level_name="critical") == 0.0
    assert value(found, "notify_emergency_fallbacks_total", reason="mode-emergency") == 1.0
    assert value(found, "notify_emergency_breaker_state", state="open") == 1.0
    assert value(found, "notify_emergency_breaker_state", state="closed") == 0.0
    assert value(found, "notify_emergency_monitor_heartbeat_age_seconds") is None  # no monitor has run

    ext.monitor.tick()
    found = scrape()
    age = value(found, "notify_emergency_monitor_heartbeat_age_seconds")
    assert age is not None and age >= 0


def test_an_acknowledged_notification_is_delivered_realtime_with_its_latency(make_app):
    app, sio = make_app(NOTIFY_EMERGENCY_METRICS_TOKEN=TOKEN)
    ext = app.extensions["notify_emergency"]
    web = app.test_client()
    login(web, "alice")
    client = sio.test_client(app, namespace=NAMESPACE, flask_test_client=web)
    assert client.is_connected(NAMESPACE)
    with app.app_context():
        nid = ext.dispatcher.send(user_id(app, "alice"), "Live", "over the socket")
    client.emit("notify_emergency:ack", {"id": nid}, namespace=NAMESPACE, callback=True)
    found = samples(app.test_client().get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"})
                    .get_data(as_text=True))
    assert value(found, "notify_emergency_notifications_sent_total", channel="realtime") == 1.0
    assert value(found, "notify_emergency_notifications_delivered_total", channel="realtime") == 1.0
    assert value(found, "notify_emergency_ack_latency_seconds_count") == 1.0
    assert value(found, "notify_emergency_ack_latency_seconds_bucket", le="+Inf") == 1.0
    assert value(found, "notify_emergency_connected_users") == 1.0
    client.disconnect(NAMESPACE)


# -- two served workers ----------------------------------------------------------------------
def scrape(server: ServedApp) -> dict[Any, float]:
    response = requests.get(server.url + METRICS, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return samples(response.text)


@pytest.mark.slow
@pytest.mark.redis
def test_two_workers_report_the_same_cluster_totals(tmp_path, redis_url, redis_prefix):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_METRICS_TOKEN": TOKEN, "NOTIFY_EMERGENCY_ACK_TIMEOUT": 10.0,
              # emits cross workers through Redis, on a channel no other test uses
              "SOCKETIO_MESSAGE_QUEUE": redis_url, "SOCKETIO_CHANNEL": f"{redis_prefix}-socketio"}
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    client = socketio.Client(reconnection=False)

    @client.on("notify_emergency:notification", namespace=NAMESPACE)
    def on_notification(data: dict[str, Any]) -> None:  # the browser script: show, then ack
        client.emit("notify_emergency:ack", {"id": data["id"]}, namespace=NAMESPACE)

    def delivered_realtime() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM notify_emergency_notification "
                                            "WHERE channel = 'realtime'")).scalar_one())

    with ServedApp(free_port(), config, env) as a, ServedApp(free_port(), config, env) as b:
        try:
            with engine.connect() as conn:
                ids = dict(conn.execute(sa.text("SELECT username, id FROM demo_user")).all())
            bob_web = a.session_as("bob")
            client.connect(a.url, namespaces=[NAMESPACE], wait_timeout=10,
                           headers={"Cookie": "; ".join(f"{c.name}={c.value}" for c in bob_web.cookies)})
            admin_a, admin_b = a.session_as("admin"), b.session_as("admin")
            # bob's socket is on A; B sends two to him (emitted by B, acknowledged on A),
            # A sends one to alice, who has no socket (a fallback counted by A)
            for title in ("First", "Second"):
                admin_b.post(b.url + "/send", data={"user_id": ids["bob"], "title": title, "message": "hi"},
                             timeout=10)
            admin_a.post(a.url + "/send", data={"user_id": ids["alice"], "title": "Away", "message": "later"},
                         timeout=10)
            wait_until(lambda: delivered_realtime() == 2, timeout=15, message="both acknowledgements")

            for server in (a, b):
                found = scrape(server)
                assert value(found, "notify_emergency_notifications_sent_total", channel="realtime") == 2.0
                assert value(found, "notify_emergency_notifications_sent_total", channel="fallback") == 1.0
                assert value(found, "notify_emergency_fallbacks_total", reason="offline") == 1.0
                assert value(found, "notify_emergency_notifications_delivered_total", channel="realtime") == 2.0
                assert value(found, "notify_emergency_ack_latency_seconds_count") == 2.0
                # cluster facts: read once from the shared state, never summed per worker
                assert value(found, "notify_emergency_connected_users") == 1.0
                assert value(found, "notify_emergency_backlog_size") == 1.0
                assert value(found, "notify_emergency_mode", mode="normal") == 1.0

            # a mode change by a third process is what both workers report
            flask = os.path.join(os.path.dirname(sys.executable), "flask")
            (tmp_path / "cli_app.py").write_text("from tests.support.apps import build_example\n"
                                                 f"app, socketio = build_example({config!r})\n")
            activated = subprocess.run([flask, "--app", "cli_app", "emergency", "activate-emergency", "--reason",
                                        "metrics drill", "--level", "1"], cwd=tmp_path, capture_output=True,
                                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
            assert activated.returncode == 0, activated.stdout + activated.stderr
            for server in (a, b):
                found = scrape(server)
                assert value(found, "notify_emergency_mode", mode="emergency") == 1.0
                assert value(found, "notify_emergency_open_emergencies", level="1", level_name="critical") == 1.0
        finally:
            client.disconnect()
            engine.dispose()

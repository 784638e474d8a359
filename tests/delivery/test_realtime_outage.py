"""The real-time path killed for real: a private Redis as Flask-SocketIO's message queue."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

from flask_notify_emergency.detect.classify import classify
from flask_notify_emergency.detect.health import run_health_checks
from flask_notify_emergency.respond import emergency
from tests.conftest import login, user_id
from tests.support.outages import PrivateRedis, event_rows
from tests.support.pages import flashes, notification_rows
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.slow

FAST = {"NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.0, "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": 2.0,
        "NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS": 2, "NOTIFY_EMERGENCY_RECOVERY_BACKOFF": 0.05,
        "NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER": 2, "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.2}


@pytest.fixture
def queue() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    yield redis
    redis.stop()


def queued_app(make_app: Any, queue: PrivateRedis, **config: Any) -> tuple[Any, Any]:
    app, socketio = make_app(SOCKETIO_MESSAGE_QUEUE=queue.url, **dict(FAST, **config))
    return app, app.extensions["notify_emergency"]


def test_killed_queue_fails_the_canary_fallbacks_deliver_and_the_monitor_recovers(make_app, queue):
    app, ext = queued_app(make_app, queue)
    # a cold process on a busy machine may send its first canary late (overload, not an outage)
    report = wait_until(lambda: (r := run_health_checks(ext)).status == "healthy" and r, timeout=30,
                        message="a healthy report before the fault")
    assert report.checks["realtime"].detail["canary"]["path"] == "redis queue"
    assert ext.monitor.tick()["status"] == "healthy"

    queue.kill()
    report = run_health_checks(ext)
    realtime = report.checks["realtime"]
    assert realtime.status == "failed" and "redis.exceptions.ConnectionError" in realtime.error_types
    assert report.status == "critical"
    finding = classify(report)
    assert (finding.failure_type, finding.level) == ("realtime_connection", 1)

    tick = ext.monitor.tick()
    assert tick["status"] == "activated" and tick["recovery"] == "escalated"
    event = emergency.current_event(ext)
    assert (event["failure_type"], event["level"], event["triggered_by"]) == ("realtime_connection", 1, "monitor")
    assert event["detected_at"] and ext.control.read("mode") == "emergency"
    assert [a["outcome"] for a in event["actions"] if a["action"] == "recovery-attempt"] == ["failed", "failed"]
    assert any(a["action"] == "escalate" for a in event["actions"])

    # a notification sent meanwhile reaches its user by the fallback, on the next page
    client = app.test_client()
    login(client, "alice")
    with app.app_context():
        nid = app.extensions["demo"]["notify"].send(user_id(app, "alice"), "Invoice ready", "Your invoice is ready.")
    assert "Invoice ready: Your invoice is ready." in flashes(client.get("/").get_data(as_text=True))
    client.get("/")  # the browser's next request confirms what the page showed
    row = next(r for r in notification_rows(app) if r["id"] == nid)
    assert row["delivered"] is True and row["channel"] == "flash"

    assert ext.monitor.tick()["status"] == "emergency"  # still down: same event, nothing toggles
    assert len(event_rows(app)) == 1

    queue.start()  # same port
    assert ext.monitor.tick()["status"] == "recovering"
    assert ext.control.read("mode") == "emergency"
    done = ext.monitor.tick()
    assert done["status"] == "recovered", done
    resolved = emergency.get_event(ext, event["id"])
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == "monitor"
    assert resolved["detected_at"] and resolved["resolved_at"] and resolved["recovered"] is True
    assert ext.control.read("mode") == "normal"
    replay = wait_until(lambda: ext.monitor.last_replay, timeout=10, message="the backlog replay")
    assert replay["ok"] is True


def test_a_flapping_queue_never_toggles_emergency_mode(make_app, queue):
    app, ext = queued_app(make_app, queue, NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER=3,
                          NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=1)
    queue.kill()
    assert ext.monitor.tick()["status"] == "activated"
    seen = []
    for _ in range(3):
        queue.start()
        up = ext.monitor.tick()
        queue.kill()
        down = ext.monitor.tick()
        seen.append((up["status"], up["healthy_streak"], down["status"], ext.control.read("mode")))
    assert seen == [("recovering", 1, "emergency", "emergency")] * 3
    events = event_rows(app)
    assert len(events) == 1 and events[0]["status"] == "open"
    audit = ext.audit.table
    import sqlalchemy as sa

    with ext.engine.connect() as conn:
        actions = [r[0] for r in conn.execute(sa.select(audit.c.action).where(
            audit.c.action.in_(["activate-emergency", "deactivate-emergency"])))]
    assert actions == ["activate-emergency"]


def test_the_canary_also_proves_this_workers_own_queue_listener(make_app, queue):
    """Served for real (threaded WSGI server on loopback), so the Socket.IO manager runs its
    listener; after an outage the canary passes only once that listener hears the queue."""
    import socketio as python_socketio
    from werkzeug.serving import make_server

    app, ext = queued_app(make_app, queue)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = python_socketio.Client()
    try:
        client.connect(f"http://127.0.0.1:{port}", transports=["polling"], wait_timeout=10)
        canary = run_health_checks(ext, only=["realtime"]).checks["realtime"].detail["canary"]
        assert canary["listener"] == "hears the queue"

        queue.kill()
        assert run_health_checks(ext, only=["realtime"]).checks["realtime"].status == "failed"
        queue.start()

        def realtime_ok() -> Any:
            check = run_health_checks(ext, only=["realtime"]).checks["realtime"]
            return check if check.status == "ok" else None

        check = wait_until(realtime_ok, timeout=30, interval=0.2, message="the queue listener to reconnect")
        assert check.detail["canary"]["listener"] == "hears the queue"
    finally:
        client.disconnect()
        server.shutdown()


def test_a_hung_queue_cannot_hang_send(make_app, queue):
    """A queue server that accepts and never answers (SIGSTOP): send() gives up after
    NOTIFIER_TIMEOUT, the breaker counts the failure and the notification falls back."""
    import requests
    import socketio as python_socketio
    from werkzeug.serving import make_server

    from flask_notify_emergency import signals

    app, ext = queued_app(make_app, queue, NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT=0.5)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    session = requests.Session()
    assert session.post(f"http://127.0.0.1:{port}/login", data={"username": "alice", "password": "alice"},
                        allow_redirects=False, timeout=10).status_code == 302
    client = python_socketio.Client(reconnection=False)
    fallbacks: list[str] = []

    @signals.notification_fallback.connect_via(app)
    def on_fallback(sender: Any, notification: dict[str, Any], reason: str, **extra: Any) -> None:
        fallbacks.append(reason)

    uid = user_id(app, "alice")
    try:
        client.connect(f"http://127.0.0.1:{port}", namespaces=["/notify-emergency"], transports=["polling"],
                       headers={"Cookie": "; ".join(f"{k}={v}" for k, v in session.cookies.items())},
                       wait_timeout=10)
        wait_until(lambda: ext.state.is_connected(uid), timeout=10, message="alice's socket to register")
        queue.freeze()
        sent = threading.Event()

        def send() -> None:
            with app.app_context():
                app.extensions["demo"]["notify"].send(uid, "Held up", "The queue hung.")
            sent.set()

        threading.Thread(target=send, daemon=True).start()
        assert sent.wait(15), "send() hung on the frozen message queue"
        assert fallbacks == ["failed"]
        assert ext.state.may_have_pending(uid)
        row = next(r for r in notification_rows(app) if r["title"] == "Held up")
        assert row["delivered"] is False and row["realtime_deadline"] is None
    finally:
        queue.thaw()
        client.disconnect()
        server.shutdown()

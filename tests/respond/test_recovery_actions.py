"""Each recovery action does what it says, on the example app with real sockets and processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from flask_notify_emergency import ConfigError
from flask_notify_emergency.automation.recovery import (
    RecoveryError,
    auto_recover,
    clear_queues,
    clear_sessions,
    half_open_breaker,
    reconnect_redis,
    replay_backlog,
    restart_websockets,
    run_service_command,
)
from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from flask_notify_emergency.models import utcnow
from flask_notify_emergency.respond import emergency
from tests.conftest import login, user_id
from tests.support.pages import NAMESPACE, flashes, notification_rows, received


def ext_of(app: Any) -> Any:
    return app.extensions["notify_emergency"]


def store(app: Any, user: str, title: str, **values: Any) -> int:
    row = {"user_id": user, "title": title, "message": f"{title}.", "created_at": utcnow(), "delivered": False}
    row.update(values)
    return int(ext_of(app).store.create(row))


def audit_actions(app: Any) -> list[tuple[str, str]]:
    t = ext_of(app).audit.table
    with ext_of(app).engine.connect() as conn:
        return [(r.action, r.outcome) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def connect(app: Any, socketio: Any, name: str) -> tuple[Any, Any]:
    client = app.test_client()
    login(client, name)
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    assert sio.is_connected(NAMESPACE)
    return client, sio


def test_clear_queues_backs_up_first_releases_stuck_rows_and_loses_nothing(make_app, tmp_path):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    past = utcnow() - dt.timedelta(minutes=5)
    stuck = store(app, alice, "Stuck in flight", realtime_deadline=past, attempts=1)
    expired = store(app, bob, "Too late", expires_at=past)
    waiting = store(app, bob, "Waiting for bob")
    done = store(app, alice, "Already read", delivered=True, channel="realtime")

    result = clear_queues(ext_of(app), "ops")
    assert (result["ok"], result["released"], result["expired_deleted"]) == (True, 1, 1)
    with open(result["backup"], encoding="utf-8") as f:
        backup = json.load(f)
    assert oct(os.stat(result["backup"]).st_mode & 0o777) == "0o600"
    assert [r["id"] for r in backup["rows"]["released"]] == [stuck]
    assert [(r["id"], r["title"]) for r in backup["rows"]["expired_deleted"]] == [(expired, "Too late")]

    rows = {r["id"]: r for r in notification_rows(app)}
    assert expired not in rows  # it can never be shown; its copy is in the backup
    assert rows[stuck]["delivered"] is False and rows[stuck]["realtime_deadline"] is None
    assert rows[waiting]["delivered"] is False and rows[done]["delivered"] is True
    # the released row reaches alice on her next page
    client = app.test_client()
    login(client, "alice")
    assert "Stuck in flight: Stuck in flight." in flashes(client.get("/").get_data(as_text=True))

    again = clear_queues(ext_of(app), "ops")
    assert again["backup"] is None and again["released"] == 0
    assert audit_actions(app).count(("clear-queues", "ok")) == 2


def test_clear_queues_gives_a_hosts_fallback_receiver_the_whole_notification(make_app, tmp_path):
    from flask_notify_emergency import signals

    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    alice = user_id(app, "alice")
    stuck = store(app, alice, "Disk", message="Almost full.", priority="high",
                  realtime_deadline=utcnow() - dt.timedelta(minutes=5), attempts=1)
    calls: list[tuple[dict[str, Any], str]] = []

    def to_pager(sender: Any, notification: dict[str, Any], reason: str, **_: Any) -> None:
        calls.append((notification, reason))

    with signals.notification_fallback.connected_to(to_pager, sender=app):
        assert clear_queues(ext_of(app), "ops")["released"] == 1
    (notification, reason), = calls
    assert reason == "queue-cleared"
    assert (notification["id"], notification["user_id"]) == (stuck, alice)
    # a pager or SMS receiver needs the text, not just the id
    assert (notification["title"], notification["message"], notification["priority"]) == \
        ("Disk", "Almost full.", "high")


def test_run_service_command_captures_output_and_kills_one_over_the_timeout(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_SERVICE_COMMAND_TIMEOUT=1.0, NOTIFY_EMERGENCY_SERVICE_COMMANDS={
        "hello": [sys.executable, "-c", "print('hello from ops')"],
        "fails": [sys.executable, "-c", "import sys; print('bad', file=sys.stderr); sys.exit(3)"],
        "hangs": [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
        "missing": ["/nonexistent/restart-web"],
    })
    ext = ext_of(app)
    hello = run_service_command(ext, "hello", "ops")
    assert (hello["ok"], hello["returncode"], hello["stdout"], hello["timed_out"]) == (True, 0, "hello from ops\n", False)
    fails = run_service_command(ext, "fails", "ops")
    assert (fails["ok"], fails["returncode"], fails["stderr"]) == (False, 3, "bad\n")
    assert fails["error"] == "exited with status 3"
    hangs = run_service_command(ext, "hangs", "ops")
    assert hangs["timed_out"] is True and hangs["ok"] is False and hangs["returncode"] == -9
    assert hangs["stdout"] == "started\n" and "killed after 1s" in hangs["error"]
    missing = run_service_command(ext, "missing", "ops")
    assert missing["ok"] is False and "could not start '/nonexistent/restart-web'" in missing["error"]
    with pytest.raises(RecoveryError, match="unknown operator command 'reboot': configured are fails, hangs"):
        run_service_command(ext, "reboot", "ops")
    assert [a for a in audit_actions(app) if a[0] == "run-service-command"] == [
        ("run-service-command", "ok"), ("run-service-command", "failed"), ("run-service-command", "failed"),
        ("run-service-command", "failed")]


def test_service_commands_are_off_unless_configured_and_never_a_shell_string(make_app):
    app, _ = make_app()
    with pytest.raises(RecoveryError, match="no operator commands are configured: set NOTIFY_EMERGENCY_SERVICE"):
        run_service_command(ext_of(app), "restart-web", "ops")
    with pytest.raises(ConfigError, match="SERVICE_COMMANDS must be a dict of name -> argv list"):
        make_app(NOTIFY_EMERGENCY_SERVICE_COMMANDS={"restart-web": "systemctl restart web"})


def test_replay_offers_connected_users_rows_over_the_socket_and_marks_the_rest(make_app):
    app, socketio = make_app()
    ext = ext_of(app)
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    _, sio = connect(app, socketio, "alice")
    received(sio, EVENT)
    waiting_a = store(app, alice, "For alice")
    waiting_b = store(app, bob, "For bob")

    result = replay_backlog(ext, rate=1000, actor="ops", source="cli")
    assert (result["offered"], result["users_marked_pending"], result["realtime"]) == (1, 1, True)
    got = received(sio, EVENT)
    assert [n["id"] for n in got] == [waiting_a]
    row = next(r for r in notification_rows(app) if r["id"] == waiting_a)
    assert row["realtime_deadline"] is not None and row["delivered"] is False
    sio.emit(ACK_EVENT, {"id": waiting_a}, namespace=NAMESPACE, callback=True)
    row = next(r for r in notification_rows(app) if r["id"] == waiting_a)
    assert row["delivered"] is True and row["channel"] == "realtime"
    assert ext.state.may_have_pending(bob)
    bob_client = app.test_client()
    login(bob_client, "bob")
    assert "For bob: For bob." in flashes(bob_client.get("/").get_data(as_text=True))
    bob_client.get("/")  # his next request confirms what the page showed
    assert next(r for r in notification_rows(app) if r["id"] == waiting_b)["channel"] == "flash"
    sio.disconnect(NAMESPACE)


def test_replay_in_emergency_mode_offers_nothing_and_marks_everyone(make_app):
    app, socketio = make_app()
    ext = ext_of(app)
    _, sio = connect(app, socketio, "alice")
    store(app, user_id(app, "alice"), "For alice")
    emergency.activate(ext, reason="drill", triggered_by="ops")
    result = replay_backlog(ext, rate=1000)
    # alice's row, and the admin's in-app alert about the activation
    assert (result["offered"], result["users_marked_pending"], result["realtime"]) == (0, 2, False)
    assert "For alice" not in [n["title"] for n in received(sio, EVENT)]
    assert ext.state.may_have_pending(user_id(app, "alice"))
    sio.disconnect(NAMESPACE)


def test_clear_sessions_drops_registry_entries_without_a_live_socket(make_app):
    app, socketio = make_app()
    ext = ext_of(app)
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    _, sio = connect(app, socketio, "alice")
    ext.state.connection_opened(bob)  # as if bob's worker died before its disconnect handler ran
    assert ext.state.is_connected(bob)

    result = clear_sessions(ext, "ops", problematic_only=True)
    assert (result["registry_entries_cleared"], result["users"], result["disconnected_sockets"]) == (1, [bob], 0)
    assert not ext.state.is_connected(bob) and ext.state.connection_registry() == {alice: 1}
    assert sio.is_connected(NAMESPACE)

    everything = clear_sessions(ext, "ops", problematic_only=False)
    assert everything["disconnected_sockets"] == 1
    assert not sio.is_connected(NAMESPACE) and ext.state.connection_registry() == {}
    assert ("clear-sessions", "ok") in audit_actions(app)


def test_restart_websockets_and_the_breaker_and_redis_actions(make_app, redis_url, redis_prefix):
    app, socketio = make_app(NOTIFY_EMERGENCY_REDIS_URL=redis_url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=redis_prefix)
    ext = ext_of(app)
    _, sio = connect(app, socketio, "alice")
    result = restart_websockets(ext, "ops", "cli")
    assert result["ok"] is True and result["steps"]["shared_state"] == "reconnected"
    assert result["steps"]["disconnected_sockets"] == 1 and not sio.is_connected(NAMESPACE)
    assert result["steps"]["canary"]["verified"] is True

    assert reconnect_redis(ext, "ops")["outcome"] == "ok"
    assert half_open_breaker(ext, "ops")["outcome"] == "skipped"  # closed: left alone
    ext.breaker.trip()
    opened = half_open_breaker(ext, "ops")
    assert opened["outcome"] == "ok" and ext.breaker.current == "half_open"
    actions = [a[0] for a in audit_actions(app)]
    assert {"restart-websockets", "reconnect-redis", "half-open-breaker"} <= set(actions)


def test_auto_recover_opens_an_event_for_an_open_breaker_and_repairs_it(make_app):
    app, _ = make_app()
    ext = ext_of(app)
    assert auto_recover(ext, "ops", "cli")["status"] == "healthy"
    ext.breaker.trip()
    result = auto_recover(ext, "ops", "cli")
    assert result["status"] == "recovered" and result["ok"] is True
    assert result["classification"]["failure_type"] == "message_delivery"
    assert result["classification"]["level"] == 3
    event = result["event"]
    assert event["status"] == "open" and event["triggered_by"] == "ops"
    assert ext.control.read("mode", "normal") == "normal"  # level 3: an event and alerts, no emergency mode
    assert [a["action"] for a in event["actions"]] == ["open-event", "recovery-attempt"]
    assert ext.breaker.current == "half_open"
    assert [a["action"] for a in result["actions"]] == ["clear-queues", "restart-websockets", "half-open-breaker"]
    # half-open lets probes through: nothing to repair now; the event stays open for people
    again = auto_recover(ext, "ops", "cli")
    assert again["status"] == "healthy" and again["event"]["id"] == event["id"]


def test_a_replaced_queue_listener_is_ended_even_if_it_swallows_the_first_exit():
    """python-socketio's listener swallows everything while it decodes a packet (a bare
    ``except``): one asynchronous exit may land there and be lost. The replaced listener must
    end all the same, or it shares the manager's pub/sub client with its replacement."""
    import threading
    import time

    from flask_notify_emergency.respond.actions import _end_listener

    swallowed = threading.Event()

    def listener() -> None:
        while True:
            try:
                while True:
                    time.sleep(0.01)
            except SystemExit:
                if not swallowed.is_set():
                    swallowed.set()  # as the bare except does: the first exit is lost
                    continue
                raise

    ended = threading.Event()

    def run() -> None:
        try:
            listener()
        except SystemExit:
            ended.set()

    old = threading.Thread(target=run, daemon=True)
    old.start()
    reaper = threading.Thread(target=_end_listener, args=(old,), daemon=True)
    reaper.start()
    reaper.join(10)
    assert swallowed.is_set() and ended.is_set() and not old.is_alive()

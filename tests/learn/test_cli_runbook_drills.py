"""``execute-drill`` and ``evaluate-drill`` on one process: what is refused, what is only
planned, and a drill with no monitor to detect it. Drills against served workers and their
monitor are in test_drills_served.py."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from flask_notify_emergency.rollback.journal import OperationLock
from tests.support.cli import audit_rows, event_rows, invoke, stored_switch

FAST = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5,
        "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 10.0, "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": 10.0}


@pytest.fixture
def demo(make_app: Any) -> tuple[Any, Any, None]:
    """The example app on SQLite, memory backend, no message queue, no monitor running."""
    app, socketio = make_app(**FAST)
    return app, socketio, None


def drill_rows(app: Any) -> list[dict[str, Any]]:
    ext = app.extensions["notify_emergency"]
    t = ext.models.Drill.__table__
    with ext.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def calm(app: Any) -> None:
    """Nothing of a drill is left: no fault, normal mode, no open event."""
    assert stored_switch(app, "drill_fault") is None
    assert stored_switch(app, "mode", "normal") == "normal"
    assert all(e["status"] == "resolved" for e in event_rows(app))


def test_without_a_monitor_the_drill_is_recorded_as_failed_and_injects_nothing(demo):
    app, _, _ = demo
    result = invoke(app, "execute-drill", "--type", "websocket_failure", "--duration", "3",
                    "--participants", "admin1,admin2")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "failed: not run: no monitor is running to detect it" in result.output
    drill = drill_rows(app)[0]
    assert drill["result"]["status"] == "failed" and drill["result"]["injected"] == [] and drill["ended_at"]
    assert drill["participants"] == ["admin1", "admin2"]
    assert stored_switch(app, "drill_fault") is None and stored_switch(app, "drill_lease") is None
    calm(app)
    scored = invoke(app, "evaluate-drill", "--drill-id", str(drill["id"]))
    assert scored.exit_code == 1 and "1/5 criteria met" in scored.output  # only "restored": nothing was cut
    assert "the monitor opened no realtime_connection event" in scored.output


def test_a_beating_monitor_but_no_message_queue_is_refused_with_what_to_set(demo):
    app, _, _ = demo
    app.extensions["notify_emergency"].monitor.tick()  # a fresh heartbeat
    result = invoke(app, "execute-drill", "--type", "websocket_failure", "--duration", "3", "--participants", "a")
    assert result.exit_code == 1 and "set SOCKETIO_MESSAGE_QUEUE to a redis:// URL" in result.output
    result = invoke(app, "execute-drill", "--type", "redis_failure", "--duration", "3", "--participants", "a")
    assert result.exit_code == 1 and "set NOTIFY_EMERGENCY_REDIS_URL" in result.output
    for drill in ("notification_failure", "multi_component"):  # both cut the message queue first
        result = invoke(app, "execute-drill", "--type", drill, "--duration", "3", "--participants", "a")
        assert result.exit_code == 1 and "set SOCKETIO_MESSAGE_QUEUE to a redis:// URL" in result.output
        assert "Traceback" not in result.output
    assert stored_switch(app, "drill_fault") is None
    calm(app)


def test_dry_run_shows_the_plan_and_changes_nothing(demo):
    app, _, _ = demo
    app.extensions["notify_emergency"].monitor.tick()
    result = invoke(app, "execute-drill", "--type", "database_connectivity", "--duration", "300",
                    "--participants", "admin1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Drill plan (database_failure)" in result.output  # the old name is another name of it
    assert "cut the database connections of every serving worker" in result.output
    assert "wait for the monitor to open a database_persistence event" in result.output
    assert "ready to run." in result.output
    assert drill_rows(app) == [] and event_rows(app) == [] and audit_rows(app, "execute-drill") == []
    calm(app)


def test_a_drill_is_refused_during_a_real_emergency(demo):
    app, _, _ = demo
    invoke(app, "activate-emergency", "--reason", "real outage")
    result = invoke(app, "execute-drill", "--type", "database_failure", "--duration", "1", "--participants", "a")
    assert result.exit_code == 1 and "a real emergency is in progress" in result.output
    assert drill_rows(app) == [] and stored_switch(app, "drill_fault") is None


def test_a_rollback_drill_needs_an_admin_for_its_probe(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_ADMIN_USER_IDS=lambda: [], **FAST)
    app.extensions["notify_emergency"].monitor.tick()
    result = invoke(app, "execute-drill", "--type", "complete_rollback", "--duration", "1", "--participants", "a")
    assert result.exit_code == 1 and "set NOTIFY_EMERGENCY_TEST_USER_ID (or NOTIFY_EMERGENCY_ADMIN_USER_IDS)" \
        in result.output
    assert "Traceback" not in result.output
    assert drill_rows(app)[0]["result"]["injected"] == [] and audit_rows(app, "rollback") == []
    calm(app)


def test_a_rollback_drill_does_not_take_the_probe_users_pending_notifications(demo):
    app, _, _ = demo
    ext = app.extensions["notify_emergency"]
    ext.monitor.tick()
    nid = ext.dispatcher.send("1", "For the admin", "Not yet seen.")  # the first admin: the default probe user
    result = invoke(app, "execute-drill", "--type", "complete_rollback", "--duration", "1", "--participants", "a")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the probe user 1 has 1 undelivered notification(s)" in result.output
    assert "set NOTIFY_EMERGENCY_TEST_USER_ID to a dedicated test user" in result.output
    assert not ext.store.get(nid)["delivered"] and audit_rows(app, "rollback") == []
    calm(app)


def test_a_rollback_drill_refused_by_a_running_rollback_restores_nothing(demo):
    app, _, _ = demo
    ext = app.extensions["notify_emergency"]
    ext.monitor.tick()
    lock = OperationLock(ext.engine, ext.models)
    lock.acquire("rollback", None)  # an operator's rollback is under way
    try:
        result = invoke(app, "execute-drill", "--type", "complete_rollback", "--duration", "1", "--participants", "a")
    finally:
        lock.release()
    assert result.exit_code == 1 and "RollbackError" in result.output and "Traceback" not in result.output
    drill = drill_rows(app)[0]["result"]
    assert drill["status"] == "failed" and drill["injected"] == [] and drill["restore_seconds"] is None
    assert audit_rows(app, "restore") == [] and stored_switch(app, "drill_lease") is None
    calm(app)


def test_a_rollback_drill_dry_run_shows_its_steps_and_changes_nothing(demo):
    app, _, _ = demo
    app.extensions["notify_emergency"].monitor.tick()
    result = invoke(app, "execute-drill", "--type", "complete_rollback", "--duration", "60",
                    "--participants", "admin1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "roll the cluster back to flash-only delivery (rollback --confirm), timed" in result.output
    assert "delivered by the fallbacks (not the socket)" in result.output
    assert "restore real-time delivery (restore --confirm), timed" in result.output
    assert drill_rows(app) == [] and audit_rows(app, "rollback") == [] and audit_rows(app, "execute-drill") == []
    calm(app)


@pytest.mark.parametrize("args, complaint", [
    (["--type", "meteor", "--participants", "a"], "'meteor' is not one of"),
    (["--type", "multi-component", "--participants", "a"], "'multi_component', 'complete_rollback'"),
    (["--type", "notification", "--participants", "a"], "'notification_failure'"),
    (["--type", "complete_rollback", "--duration", "0", "--participants", "a"], "is not in the range"),
    (["--type", "complete_rollback"], "--participants is required"),
    (["--type", "websocket_failure", "--duration", "-1", "--participants", "a"], "is not in the range"),
    (["--type", "websocket_failure", "--duration", "7200", "--participants", "a"], "is not in the range"),
    (["--type", "websocket_failure", "--participants", " , "], "--participants is required"),
    (["--type", "websocket_failure", "--participants", "a", "--probe-user", "2"], "No such option '--probe-user'"),
])
def test_execute_drill_bad_input(demo, args, complaint):
    app, _, _ = demo
    result = invoke(app, "execute-drill", *args)
    assert result.exit_code == 2 and complaint in result.output
    assert drill_rows(app) == []


@pytest.mark.parametrize("ref, complaint", [
    ("17", "no drill #17"), ("drill_2025", "is not a valid drill id"), ("emergency_20250830_001", "is not a valid drill id"),
])
def test_evaluate_drill_bad_id(demo, ref, complaint):
    app, _, _ = demo
    result = invoke(app, "evaluate-drill", "--drill-id", ref)
    assert result.exit_code == 2 and complaint in result.output

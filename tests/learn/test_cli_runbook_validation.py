"""``test-emergency-procedures`` (the procedures on a throwaway copy) and
``validate-recovery`` (the runbook's Post-Recovery Validation checklist)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import user_id
from tests.support.cli import audit_rows, event_rows, invoke, invoke_json, stored_switch
from tests.support.pages import notification_rows

FAST = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5,
        "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.0, "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": 1.0}


@pytest.fixture
def demo(make_app: Any) -> Any:
    app, _ = make_app(**FAST)
    app.config["NOTIFY_EMERGENCY_TEST_USER_ID"] = user_id(app, "bob")
    return app


def test_procedures_pass_on_a_copy_and_leave_the_real_app_as_it_was(demo):
    app = demo
    notify = app.extensions["demo"]["notify"]
    with app.app_context():
        notify.send(user_id(app, "alice"), "Caption ready", "Waiting for alice.")
    invoke(app, "activate-emergency", "--reason", "real outage in progress")
    before = (stored_switch(app, "mode"), len(event_rows(app)), len(notification_rows(app)))

    code, data = invoke_json(app, "test-emergency-procedures")
    assert code == 0, data
    assert [s["name"] for s in data["steps"]] == [
        "activate-emergency", "fallback-delivery", "enable-fallbacks", "recover", "deactivate-emergency",
        "realtime-after-recovery", "real-app-untouched"]
    assert all(s["ok"] for s in data["steps"])
    assert data["copied"]["notify_emergency_notification"] == before[2] > 0  # the copy has the real rows
    assert (stored_switch(app, "mode"), len(event_rows(app)), len(notification_rows(app))) == before
    assert notification_rows(app)[0]["delivered"] is False  # alice's notification is still hers to get
    assert audit_rows(app, "test-emergency-procedures")[-1]["outcome"] == "ok"


def test_procedures_text_report(demo):
    result = invoke(demo, "test-emergency-procedures")
    assert result.exit_code == 0
    assert "Emergency procedures (sandbox" in result.output and "all passed" in result.output
    assert "ok   fallback-delivery" in result.output


def test_validate_recovery_passes_on_a_healthy_app(demo):
    app = demo
    code, data = invoke_json(app, "validate-recovery")
    assert code == 0, data["checks"]
    verdicts = {c["name"]: c["ok"] for c in data["checks"]}
    assert verdicts == {"websocket": True, "delivery": True, "database": True, "authentication": True,
                        "pages": True, "admin-notifications": True, "console-errors": None, "performance": None}
    bob_rows = notification_rows(app, user_id=user_id(app, "bob"))
    assert [(r["delivered"], r["channel"]) for r in bob_rows] == [(True, "flash")]  # reached the test user once
    admin_rows = notification_rows(app, user_id=user_id(app, "admin"))
    assert [r["title"] for r in admin_rows] == ["Recovery validation"]
    assert audit_rows(app, "validate-recovery")[-1]["outcome"] == "ok"
    text = invoke(app, "validate-recovery").output
    assert "WebSocket connections established" in text and "to check by hand" in text


def test_validate_recovery_fails_while_real_time_is_still_off(demo):
    app = demo
    invoke(app, "enable-fallback", "--type", "flash")
    code, data = invoke_json(app, "validate-recovery")
    assert code == 1
    websocket = next(c for c in data["checks"] if c["name"] == "websocket")
    assert websocket["ok"] is False and "real-time delivery is paused" in websocket["detail"]
    assert audit_rows(app, "validate-recovery")[-1]["outcome"] == "failed"


def test_validate_recovery_never_takes_a_real_users_notifications(demo):
    app = demo
    bob = user_id(app, "bob")
    with app.app_context():
        app.extensions["demo"]["notify"].send(bob, "Caption ready", "For bob's own eyes.")
    code, data = invoke_json(app, "validate-recovery")
    assert code == 1
    delivery = next(c for c in data["checks"] if c["name"] == "delivery")
    assert delivery["ok"] is False and "use a dedicated test user" in delivery["detail"]
    assert [r["delivered"] for r in notification_rows(app, user_id=bob)] == [False]


def test_validate_recovery_without_any_user_to_test_with(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_ADMIN_USER_IDS=None, **FAST)
    code, data = invoke_json(app, "validate-recovery")
    assert code == 1
    failed = {c["name"]: c["detail"] for c in data["checks"] if c["ok"] is False}
    assert "NOTIFY_EMERGENCY_TEST_USER_ID" in failed["delivery"]
    assert "NOTIFY_EMERGENCY_ADMIN_USER_IDS" in failed["admin-notifications"]


def test_validation_commands_have_help(demo):
    for command in ("test-emergency-procedures", "validate-recovery"):
        assert invoke(demo, command, "--help").exit_code == 0

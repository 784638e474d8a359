"""``flask emergency`` response commands: activate/deactivate, send-notification, fallbacks."""

from __future__ import annotations

import pytest

from flask_notify_emergency.audit import cli_actor
from tests.conftest import login, user_id
from tests.support.cli import audit_rows, dead_queue_app, event_rows, invoke, invoke_json, stored_switch
from tests.support.pages import banner_ids, banner_rows, flashes, notification_rows


# -- activate-emergency ---------------------------------------------------------------------
def test_activate_switches_mode_opens_event_and_audits(example):
    app, _ = example
    result = invoke(app, "activate-emergency", "--reason", "Critical notification system failure",
                    "--triggered-by", "ops-alice")
    assert result.exit_code == 0, result.output
    assert "Emergency mode ACTIVE" in result.output
    assert "level 1 (critical)" in result.output
    assert stored_switch(app, "mode") == "emergency"
    [event] = event_rows(app)
    assert (event["status"], event["level"], event["reason"], event["triggered_by"]) == (
        "open", 1, "Critical notification system failure", "ops-alice")
    [entry] = audit_rows(app, "activate-emergency")
    assert (entry["actor"], entry["source"], entry["outcome"]) == ("ops-alice", "cli", "ok")


def test_activate_routes_the_apps_notifications_to_flash(example):
    app, _ = example
    assert invoke(app, "activate-emergency", "--reason", "socket queue down").exit_code == 0
    notify = app.extensions["demo"]["notify"]
    with app.app_context():
        notify.send(user_id(app, "alice"), "Report ready", "Your report is ready.")
    [row] = notification_rows(app, title="Report ready")
    assert row["realtime_deadline"] is None and row["attempts"] == 0  # real-time was never tried
    client = app.test_client()
    login(client, "alice")
    assert flashes(client.get("/").get_data(as_text=True)).count("Report ready: Your report is ready.") == 1


@pytest.mark.parametrize("given, number", [("high", 2), ("3", 3), ("LOW", 4), ("1", 1)])
def test_activate_accepts_level_names_and_numbers(example, given, number):
    app, _ = example
    code, data = invoke_json(app, "activate-emergency", "--reason", "r", "--level", given)
    assert code == 0
    assert data["event"]["level"] == number


def test_activate_defaults_actor_to_the_os_user(example):
    app, _ = example
    assert invoke(app, "activate-emergency", "--reason", "r").exit_code == 0
    assert audit_rows(app, "activate-emergency")[0]["actor"] == cli_actor()
    assert event_rows(app)[0]["triggered_by"] == cli_actor()


def test_activate_unknown_level_lists_valid_levels_and_changes_nothing(example):
    app, _ = example
    result = invoke(app, "activate-emergency", "--reason", "r", "--level", "severe")
    assert result.exit_code == 2
    assert "unknown emergency level 'severe'" in result.output
    assert "1 (critical), 2 (high), 3 (medium), 4 (low)" in result.output
    assert event_rows(app) == [] and stored_switch(app, "mode") is None


@pytest.mark.parametrize("args", [(), ("--reason", "   ")])
def test_activate_without_reason_says_to_give_one(example, args):
    app, _ = example
    result = invoke(app, "activate-emergency", *args)
    assert result.exit_code == 2
    assert "a reason is required" in result.output and "--reason" in result.output
    assert event_rows(app) == []


def test_activate_twice_keeps_one_event(example):
    app, _ = example
    assert invoke(app, "activate-emergency", "--reason", "first").exit_code == 0
    again = invoke(app, "activate-emergency", "--reason", "second")
    assert again.exit_code == 0
    assert "already active" in again.output
    assert len(event_rows(app)) == 1
    assert audit_rows(app, "activate-emergency")[-1]["outcome"] == "noop"


# -- deactivate-emergency -------------------------------------------------------------------
def test_deactivate_while_not_active_fails(example):
    app, _ = example
    result = invoke(app, "deactivate-emergency", "--resolved-by", "bob")
    assert result.exit_code == 1
    assert "not active" in result.output


def test_deactivate_force_without_reason_says_to_give_one(example):
    app, _ = example
    invoke(app, "activate-emergency", "--reason", "r")
    result = invoke(app, "deactivate-emergency", "--force")
    assert result.exit_code == 2
    assert "--force needs --reason" in result.output
    assert stored_switch(app, "mode") == "emergency"


def test_deactivate_when_healthy_resolves_the_event(example):
    app, _ = example
    invoke(app, "activate-emergency", "--reason", "r")
    result = invoke(app, "deactivate-emergency", "--resolved-by", "ops-bob")
    assert result.exit_code == 0, result.output
    assert "Emergency mode off: delivery mode is 'normal'; event #1 resolved by ops-bob." in result.output
    assert event_rows(app)[0]["status"] == "resolved"


def test_deactivate_is_refused_while_checks_fail_unless_forced(make_app):
    app, _ = dead_queue_app(make_app)
    invoke(app, "activate-emergency", "--reason", "socket queue down")
    refused = invoke(app, "deactivate-emergency", "--resolved-by", "ops-bob")
    assert refused.exit_code == 1
    assert "these checks still fail: realtime" in refused.output and "--force" in refused.output
    assert stored_switch(app, "mode") == "emergency"
    assert audit_rows(app, "deactivate-emergency")[-1]["outcome"] == "refused"
    forced = invoke(app, "deactivate-emergency", "--resolved-by", "ops-bob", "--force", "--reason", "queue moved")
    assert forced.exit_code == 0, forced.output
    assert "Forced past failing health checks (realtime): queue moved" in forced.output
    assert stored_switch(app, "mode") == "normal"
    entry = audit_rows(app, "deactivate-emergency")[-1]
    assert (entry["outcome"], entry["detail"]) == ("ok", "forced past failing checks: realtime")


def test_forced_deactivate_while_checks_pass_does_not_claim_to_override_them(example):
    app, _ = example
    invoke(app, "activate-emergency", "--reason", "r")
    forced = invoke(app, "deactivate-emergency", "--resolved-by", "ops-bob", "--force", "--reason", "all clear")
    assert forced.exit_code == 0, forced.output
    assert "Forced (checks were passing): all clear" in forced.output
    assert "Forced past failing" not in forced.output
    assert stored_switch(app, "mode") == "normal"
    entry = audit_rows(app, "deactivate-emergency")[-1]
    assert entry["detail"] == "forced; the checks were passing"
    invoke(app, "activate-emergency", "--reason", "again")
    code, data = invoke_json(app, "deactivate-emergency", "--force", "--reason", "all clear")
    assert code == 0 and (data["forced"], data["failing_checks"]) == (True, [])


def test_forced_deactivate_resolves_event_and_reports_leftovers(example):
    app, _ = example
    invoke(app, "activate-emergency", "--reason", "r")
    invoke(app, "enable-fallback", "--type", "flash")
    code, data = invoke_json(app, "deactivate-emergency", "--resolved-by", "ops-bob", "--force",
                             "--reason", "queue restored")
    assert code == 0, data
    assert data["mode"] == "normal" and data["event"]["status"] == "resolved"
    assert data["event"]["resolved_by"] == "ops-bob"
    assert any("real-time delivery is still paused" in n for n in data["notes"])
    assert stored_switch(app, "mode") == "normal"
    entry = audit_rows(app, "deactivate-emergency")[-1]
    assert (entry["actor"], entry["source"], entry["arguments"]["force"]) == ("ops-bob", "cli", True)


# -- send-notification ----------------------------------------------------------------------
def test_send_to_named_users_stores_one_row_each(example):
    app, _ = example
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    code, data = invoke_json(app, "send-notification", "--title", "EMERGENCY", "--message", "Check the dashboard",
                             "--priority", "critical", "--target", f"user:{alice},{bob}")
    assert code == 0, data
    rows = notification_rows(app)
    assert sorted(r["user_id"] for r in rows) == sorted([alice, bob])
    assert {(r["title"], r["priority"], r["category"]) for r in rows} == {("EMERGENCY", "critical", "emergency")}
    assert [r["user_id"] for r in data["recipients"]] == [alice, bob]
    assert audit_rows(app, "send-notification")[0]["source"] == "cli"


def test_send_to_admins_uses_the_admin_ids_callable(example):
    app, _ = example
    result = invoke(app, "send-notification", "--title", "EMERGENCY: Notification System Failure",
                    "--message", "Emergency procedures activated.", "--priority", "critical")
    assert result.exit_code == 0, result.output
    assert [r["user_id"] for r in notification_rows(app)] == [user_id(app, "admin")]


def test_send_to_admins_without_admin_ids_says_what_to_set(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_ADMIN_USER_IDS=None)
    result = invoke(app, "send-notification", "--title", "t", "--message", "m", "--target", "admins")
    assert result.exit_code == 1
    assert "NOTIFY_EMERGENCY_ADMIN_USER_IDS" in result.output
    assert notification_rows(app) == []


def test_send_to_all_posts_one_banner(example):
    app, _ = example
    result = invoke(app, "send-notification", "--title", "Heads up", "--message", "Delays expected",
                    "--priority", "high", "--target", "all")
    assert result.exit_code == 0, result.output
    [banner] = banner_rows(app)
    assert (banner["title"], banner["message"], banner["level"]) == ("Heads up", "Delays expected", "danger")
    assert notification_rows(app) == []


def test_send_to_unknown_user_stores_nothing(example):
    app, _ = example
    alice = user_id(app, "alice")
    result = invoke(app, "send-notification", "--title", "t", "--message", "m", "--target", f"user:{alice},999")
    assert result.exit_code != 0
    assert "no such user '999'" in result.output
    assert notification_rows(app) == []
    assert audit_rows(app, "send-notification") == []


@pytest.mark.parametrize("args, says", [
    (("--target", "everyone"), "unknown --target 'everyone'"),
    (("--target", "user:"), "names no user"),
    (("--priority", "urgent"), "'urgent' is not one of"),
])
def test_send_bad_input_exits_2_and_says_what_to_fix(example, args, says):
    app, _ = example
    result = invoke(app, "send-notification", "--title", "t", "--message", "m", *args)
    assert result.exit_code == 2
    assert says in result.output
    assert notification_rows(app) == []


# -- enable/disable/test-fallback -----------------------------------------------------------
def test_flash_fallback_pauses_realtime_until_disabled(example):
    app, _ = example
    result = invoke(app, "enable-fallback", "--type", "flash")
    assert result.exit_code == 0, result.output
    assert stored_switch(app, "paused")["realtime"] is True
    ext = app.extensions["notify_emergency"]
    assert ext.dispatcher.route(user_id(app, "alice")) == "paused"
    assert stored_switch(app, "fallbacks")["flash"]["by"] == cli_actor()
    result = invoke(app, "disable-fallback", "--type", "flash")
    assert result.exit_code == 0 and "resumed" in result.output
    assert stored_switch(app, "paused")["realtime"] is False
    assert [e["action"] for e in audit_rows(app)] == ["enable-fallback", "disable-fallback"]


def test_broadcast_fallback_shows_the_emergency_banner_once(example):
    app, _ = example
    assert invoke(app, "enable-fallback", "--type", "broadcast").exit_code == 0
    again = invoke(app, "enable-fallback", "--type", "broadcast")
    assert again.exit_code == 0 and "already showing" in again.output
    [banner] = banner_rows(app)
    assert banner["kind"] == "emergency"
    client = app.test_client()
    login(client, "bob")
    assert banner_ids(client.get("/").get_data(as_text=True)) == [banner["id"]]
    assert invoke(app, "disable-fallback", "--type", "broadcast").exit_code == 0
    assert banner_ids(client.get("/").get_data(as_text=True)) == []


def test_enable_fallback_needs_a_known_type(example):
    app, _ = example
    missing = invoke(app, "enable-fallback")
    assert missing.exit_code == 2 and "--type" in missing.output
    wrong = invoke(app, "enable-fallback", "--type", "sms")
    assert wrong.exit_code == 2 and "'sms' is not one of 'flash', 'broadcast'" in wrong.output


def test_test_fallback_proves_exactly_once_flash_delivery(example):
    app, _ = example
    invoke(app, "activate-emergency", "--reason", "r")
    code, data = invoke_json(app, "test-fallback", "--user", user_id(app, "bob"))
    assert code == 0, data
    steps = {s["step"]: s["ok"] for s in data["steps"]}
    assert steps == {"stored": True, "pending-marker": True, "flashed": True, "exactly-once": True,
                     "stored-as-delivered": True, "banners-rendered": True}
    [row] = notification_rows(app, category="test")
    assert (row["delivered"], row["channel"]) == (True, "flash")


def test_test_fallback_uses_the_configured_test_user(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_TEST_USER_ID="3")
    result = invoke(app, "test-fallback")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output
    assert notification_rows(app)[0]["user_id"] == "3"


def test_test_fallback_without_user_or_with_unknown_user(example):
    app, _ = example
    none = invoke(app, "test-fallback")
    assert none.exit_code == 2 and "NOTIFY_EMERGENCY_TEST_USER_ID" in none.output
    unknown = invoke(app, "test-fallback", "--user", "999")
    assert unknown.exit_code == 2 and "no such user '999'" in unknown.output
    assert notification_rows(app) == []


def test_test_fallback_refuses_to_claim_a_users_real_notifications(example):
    app, _ = example
    bob = user_id(app, "bob")
    invoke(app, "enable-fallback", "--type", "flash")
    with app.app_context():
        app.extensions["demo"]["notify"].send(bob, "Real", "A real notification")
    result = invoke(app, "test-fallback", "--user", bob)
    assert result.exit_code == 1
    assert "undelivered notifications" in result.output
    [row] = notification_rows(app)
    assert row["title"] == "Real" and row["delivered"] is False

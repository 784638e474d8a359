"""The runbook's communication commands, as an operator runs them and as users then see it:
``update-dashboard``, ``update-status-page``, ``send-user-notification``, ``generate-status-report``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flask_notify_emergency.delivery.notifier import BANNER_EVENT, EVENT
from tests.conftest import login, user_id
from tests.support.cli import audit_rows, invoke, invoke_json, stored_switch
from tests.support.pages import NAMESPACE, banner_ids, banner_rows, flashes, notification_rows, received
from tests.support.receivers import SmtpSink

XSS = "<script>alert('owned')</script>"
STATUS_JSON = "/emergency/api/status-page"
STATUS_HTML = "/emergency/status-page"


@pytest.fixture
def demo(make_app: Any) -> tuple[Any, Any]:
    return make_app(NOTIFY_EMERGENCY_ACK_TIMEOUT=0.5, NOTIFY_EMERGENCY_SWEEP_SECONDS=0.5)


def logged_in(app: Any, name: str) -> Any:
    client = app.test_client()
    login(client, name)
    return client


# -- update-dashboard ---------------------------------------------------------------------------

def test_update_dashboard_stores_the_team_status_and_audits_it(demo):
    app, _ = demo
    code, data = invoke_json(app, "update-dashboard", "--status", "emergency_active",
                             "--message", "Emergency procedures in progress")
    assert code == 0 and data["ok"] is True
    stored = stored_switch(app, "dashboard_status")
    assert (stored["status"], stored["message"]) == ("emergency_active", "Emergency procedures in progress")
    entry = audit_rows(app, "update-dashboard")[-1]
    assert entry["source"] == "cli" and entry["arguments"]["status"] == "emergency_active"

    second = invoke(app, "update-dashboard", "--status", "recovering", "--message", "Restarting sockets")
    assert second.exit_code == 0 and "Dashboard status: recovering: Restarting sockets" in second.output
    assert stored_switch(app, "dashboard_status")["status"] == "recovering"
    assert audit_rows(app, "update-dashboard")[-1]["detail"] == "was emergency_active"


def test_dashboard_status_partial_renders_the_message_escaped(demo):
    app, _ = demo
    invoke(app, "update-dashboard", "--status", "investigating", "--message", f"Looking into it {XSS}")
    from flask_notify_emergency.communicate.status_page import dashboard_status

    with app.app_context():
        value = dashboard_status(app.extensions["notify_emergency"])
        html = app.jinja_env.get_template("notify_emergency/_dashboard_status.html").render(dashboard_status=value)
    assert 'data-status="investigating"' in html and "<strong>Investigating</strong>" in html
    assert XSS not in html and "Looking into it &lt;script&gt;" in html


def test_team_status_shows_on_the_dashboard_overview_its_json_and_the_live_push(demo):
    from flask_notify_emergency.views import admin_realtime

    app, socketio = demo
    admin = logged_in(app, "admin")
    page = admin.get("/emergency/").get_data(as_text=True)
    assert 'id="ne-team-status"' in page and "notify-emergency-team-status-" not in page
    assert admin.get("/emergency/api/overview").get_json()["dashboard_status"] is None

    message = f"Looking into it {XSS}"
    invoke(app, "update-dashboard", "--status", "investigating", "--message", message)
    page = admin.get("/emergency/").get_data(as_text=True)
    team = page.split('id="ne-team-status"', 1)[1].split("</div>", 1)[0]
    assert 'data-status="investigating"' in team and "<strong>Investigating</strong>" in team
    assert "Looking into it &lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in team
    assert XSS not in page  # nor in the page's embedded JSON
    api = admin.get("/emergency/api/overview").get_json()["dashboard_status"]
    assert (api["status"], api["message"]) == ("investigating", message)

    ns = app.config["NOTIFY_EMERGENCY_ADMIN_NAMESPACE"]
    sio = socketio.test_client(app, namespace=ns, flask_test_client=admin)
    reply = sio.emit(admin_realtime.SUBSCRIBE_EVENT, {"window": "1h"}, namespace=ns, callback=True)
    assert reply["overview"]["dashboard_status"]["message"] == message
    sio.disconnect(namespace=ns)


@pytest.mark.parametrize("args, complaint", [
    (["--status", "on_fire", "--message", "x"], "'on_fire' is not one of"),
    (["--status", "investigating"], "Missing option '--message'"),
    (["--status", "investigating", "--message", "   "], "--message is required"),
])
def test_update_dashboard_refuses_bad_input_and_stores_nothing(demo, args, complaint):
    app, _ = demo
    result = invoke(app, "update-dashboard", *args)
    assert result.exit_code == 2 and complaint in result.output
    assert stored_switch(app, "dashboard_status") is None
    assert audit_rows(app, "update-dashboard") == []


# -- update-status-page -------------------------------------------------------------------------

def test_status_page_is_public_escaped_and_shows_a_banner_to_users(demo):
    app, _ = demo
    anonymous = app.test_client()
    assert anonymous.get(STATUS_JSON).get_json()["status"] == "operational"

    code, data = invoke_json(app, "update-status-page", "--status", "degraded",
                             "--message", f"Notification system experiencing issues. {XSS}")
    assert code == 0
    public = anonymous.get(STATUS_JSON).get_json()
    assert public["status"] == "degraded" and public["label"] == "Degraded performance"
    assert XSS in public["message"] and "updated_by" not in public  # who set it stays internal
    page = anonymous.get(STATUS_HTML)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-status="degraded"' in html
    assert XSS not in html and "&lt;script&gt;" in html

    bid = data["banner"]["id"]
    alice = logged_in(app, "alice")
    assert bid in banner_ids(alice.get("/").get_data(as_text=True))
    assert [b["kind"] for b in banner_rows(app) if b["id"] == bid] == ["status"]
    assert audit_rows(app, "update-status-page")[-1]["source"] == "cli"


def test_a_new_status_replaces_the_banner_and_operational_removes_it(demo):
    app, _ = demo
    _, first = invoke_json(app, "update-status-page", "--status", "partial_outage", "--message", "Some users affected.")
    _, second = invoke_json(app, "update-status-page", "--status", "major_outage", "--message", "Everyone affected.")
    page = logged_in(app, "bob").get("/").get_data(as_text=True)
    assert first["banner"]["id"] not in banner_ids(page) and second["banner"]["id"] in banner_ids(page)
    assert second["banner"]["level"] == "critical"

    code, last = invoke_json(app, "update-status-page", "--status", "operational", "--message", "Resolved.")
    assert code == 0 and last["banner"] is None and last["banners_removed"] == 1
    assert banner_ids(logged_in(app, "alice").get("/").get_data(as_text=True)) == []
    assert app.test_client().get(STATUS_JSON).get_json()["message"] == "Resolved."


def test_update_status_page_rejects_an_unknown_status(demo):
    app, _ = demo
    result = invoke(app, "update-status-page", "--status", "meh", "--message", "x")
    assert result.exit_code == 2 and "'meh' is not one of 'operational', 'degraded'" in result.output
    assert banner_rows(app) == [] and stored_switch(app, "status_page") is None


# -- send-user-notification ---------------------------------------------------------------------

def test_fallback_to_everyone_is_one_banner_not_pushed_over_the_socket(demo):
    app, socketio = demo
    alice = logged_in(app, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=alice)
    message = "We are experiencing notification system issues. Please refresh your page."
    code, data = invoke_json(app, "send-user-notification", "--message", message, "--channel", "fallback")
    assert code == 0 and data["banner"]["live"] is False
    assert len(banner_rows(app)) == 1 and notification_rows(app) == []
    assert received(sio, BANNER_EVENT) == []  # the socket is what is broken: pages show it
    assert message in alice.get("/").get_data(as_text=True)
    assert audit_rows(app, "send-user-notification")[-1]["arguments"]["channel"] == "fallback"


def test_fallback_to_named_users_skips_the_socket_and_arrives_exactly_once(demo):
    app, socketio = demo
    alice = logged_in(app, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=alice)
    assert sio.is_connected(NAMESPACE)
    uid = user_id(app, "alice")
    code, data = invoke_json(app, "send-user-notification", "--message", "Please refresh.",
                             "--title", "Heads up", "--target", f"user:{uid}")
    assert code == 0 and [n["user_id"] for n in data["notifications"]] == [uid]
    assert received(sio, EVENT) == []  # connected, yet never tried over the socket
    assert flashes(alice.get("/").get_data(as_text=True)) == ["Heads up: Please refresh."]
    assert flashes(alice.get("/").get_data(as_text=True)) == []
    row = notification_rows(app)[0]
    assert row["delivered"] is True and row["channel"] == "flash"


def test_channel_all_takes_the_normal_real_time_path(demo):
    app, socketio = demo
    bob = logged_in(app, "bob")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=bob)
    code, data = invoke_json(app, "send-user-notification", "--message", "Back soon.", "--channel", "all",
                             "--target", f"user:{user_id(app, 'bob')}")
    assert code == 0
    assert [n["id"] for n in received(sio, EVENT)] == [data["notifications"][0]["notification_id"]]

    code, everyone = invoke_json(app, "send-user-notification", "--message", "All clear.", "--channel", "all")
    assert code == 0 and everyone["banner"]["live"] is True
    assert [b["id"] for b in received(sio, BANNER_EVENT)] == [everyone["banner"]["id"]]


@pytest.mark.parametrize("args, complaint", [
    (["--target", "user:1,999999"], "no such user '999999'"),
    (["--target", "people"], "unknown --target 'people'"),
    (["--target", "user:"], "names no user"),
    (["--channel", "pigeon"], "'pigeon' is not one of 'fallback', 'all'"),
    (["--message", ""], "message must be a non-empty string"),
])
def test_send_user_notification_bad_input_sends_nothing(demo, args, complaint):
    app, _ = demo
    base = ["--message", "Please refresh."]
    if "--message" in args:
        base = []
    result = invoke(app, "send-user-notification", *base, *args)
    assert result.exit_code == 2, result.output
    assert complaint in result.output
    assert notification_rows(app) == [] and banner_rows(app) == []


# -- generate-status-report ---------------------------------------------------------------------

def test_status_report_says_mode_event_backlog_and_recent_actions(demo):
    app, _ = demo
    invoke(app, "activate-emergency", "--reason", "socket queue down")
    invoke(app, "update-dashboard", "--status", "emergency_active", "--message", "Working on it")
    invoke(app, "send-user-notification", "--message", "Please refresh.", "--target",
           f"user:{user_id(app, 'alice')}")

    markdown = invoke(app, "generate-status-report", "--format", "markdown", "--no-health")
    assert markdown.exit_code == 0
    text = markdown.output
    assert "[EMERGENCY] Notification system status: emergency_active" in text
    waiting = sum(1 for r in notification_rows(app) if not r["delivered"])  # alice's, and the admin's alert
    assert "Reason: socket queue down" in text and f"{waiting} notification(s) not yet delivered" in text
    assert "send-user-notification [ok]" in text and "activate-emergency [ok]" in text

    data = json.loads(invoke(app, "generate-status-report", "--format", "json").output)
    assert data["mode"] == "emergency" and data["event"]["reason"] == "socket queue down"
    assert data["backlog"]["undelivered"] == waiting and data["health"]["available"] is True
    assert data["health"]["score"] is not None

    email = invoke(app, "generate-status-report", "--format", "email", "--no-health")
    assert email.output.startswith("Subject: [EMERGENCY] Notification system status")


def test_status_report_json_is_the_same_as_format_json(demo):
    app, _ = demo
    invoke(app, "activate-emergency", "--reason", "socket queue down")
    code, by_flag = invoke_json(app, "generate-status-report", "--no-health")
    by_format = json.loads(invoke(app, "generate-status-report", "--format", "json", "--no-health").output)
    assert code == 0
    assert set(by_flag) == set(by_format)
    for key in ("mode", "event", "dashboard_status", "health"):
        assert by_flag[key] == by_format[key], key
    # the backlog's age grows with the clock between the two calls; the rest is the same
    first, second = dict(by_flag["backlog"]), dict(by_format["backlog"])
    assert 0 <= first.pop("oldest_age_seconds") <= second.pop("oldest_age_seconds")
    assert first == second
    assert by_flag["event"]["reason"] == "socket queue down"


def test_status_report_is_mailed_through_the_alert_smtp_server(make_app):
    sink = SmtpSink()
    try:
        app, _ = make_app(NOTIFY_EMERGENCY_SMTP_HOST="127.0.0.1", NOTIFY_EMERGENCY_SMTP_PORT=sink.port)
        invoke(app, "activate-emergency", "--reason", "socket queue down")
        result = invoke(app, "generate-status-report", "--format", "email", "--no-health",
                        "--recipients", "team@example.com,lead@example.com")
        assert result.exit_code == 0, result.output
        messages = sink.received()
        assert sorted(m["To"] for m in messages) == ["lead@example.com", "team@example.com"]
        assert all("Reason: socket queue down" in m.get_content() for m in messages)
        assert messages[0]["Subject"].startswith("[EMERGENCY] Notification system status")
        entry = audit_rows(app, "generate-status-report")[-1]
        assert entry["outcome"] == "ok" and entry["arguments"]["recipients"] == ["team@example.com", "lead@example.com"]
    finally:
        sink.stop()


def test_status_report_mail_failure_exits_non_zero(make_app):
    from tests.support.services import free_port

    app, _ = make_app(NOTIFY_EMERGENCY_SMTP_HOST="127.0.0.1", NOTIFY_EMERGENCY_SMTP_PORT=free_port())
    result = invoke(app, "generate-status-report", "--format", "email", "--no-health", "--recipients", "team@example.com")
    assert result.exit_code == 1 and "FAILED to team@example.com" in result.output
    assert audit_rows(app, "generate-status-report")[-1]["outcome"] == "failed"


@pytest.mark.parametrize("args, complaint", [
    (["--format", "email", "--recipients", "team@"], "is not an email address"),
    (["--format", "markdown", "--recipients", "team@example.com"], "--recipients needs --format email"),
    (["--format", "pdf"], "'pdf' is not one of 'email', 'markdown', 'json'"),
    (["--json", "--format", "email"], "--json and --format email disagree"),
    (["--json", "--recipients", "team@example.com"], "--recipients needs --format email"),
])
def test_status_report_bad_input(demo, args, complaint):
    app, _ = demo
    result = invoke(app, "generate-status-report", *args)
    assert result.exit_code == 2 and complaint in result.output


def test_every_communication_command_has_help(demo):
    app, _ = demo
    for command in ("update-dashboard", "update-status-page", "send-user-notification", "generate-status-report"):
        result = invoke(app, command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command

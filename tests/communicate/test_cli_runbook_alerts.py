"""``configure-alerts`` and ``test-alerts`` against real local providers: an SMTP server
(aiosmtpd) and HTTP receivers on loopback standing in for the SMS gateway and a webhook."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from flask_notify_emergency.communicate.alerts.targets import effective_targets
from tests.support.cli import audit_rows, invoke, invoke_json, stored_switch
from tests.support.pages import notification_rows
from tests.support.receivers import HttpSink, SmtpSink
from tests.support.services import free_port


@pytest.fixture
def providers() -> Iterator[tuple[SmtpSink, HttpSink]]:
    smtp, http = SmtpSink(), HttpSink()
    yield smtp, http
    smtp.stop()
    http.stop()


@pytest.fixture
def demo(make_app: Any, providers: tuple[SmtpSink, HttpSink]) -> Any:
    smtp, http = providers
    app, _ = make_app(NOTIFY_EMERGENCY_SMTP_HOST="127.0.0.1", NOTIFY_EMERGENCY_SMTP_PORT=smtp.port,
                      NOTIFY_EMERGENCY_SMS_GATEWAY_URL=f"{http.url}/sms", NOTIFY_EMERGENCY_ALERT_TIMEOUT=3.0,
                      NOTIFY_EMERGENCY_ADMIN_USER_IDS=None)
    return app


def test_configure_alerts_validates_stores_and_merges_with_config(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_ALERT_EMAILS=["ops@example.com"])
    code, data = invoke_json(app, "configure-alerts", "--email", "admin@example.com,ops@example.com",
                             "--sms", "+1234567890", "--webhook", "https://alerts.example.com/webhook")
    assert code == 0
    assert stored_switch(app, "alert_targets") == {"email": ["admin@example.com", "ops@example.com"],
                                                   "sms": ["+1234567890"],
                                                   "webhook": ["https://alerts.example.com/webhook"],
                                                   "apprise": []}
    # config first, stored after, no duplicates
    assert data["effective"]["email"] == ["ops@example.com", "admin@example.com"]
    with app.app_context():
        assert effective_targets(app.extensions["notify_emergency"])["sms"] == ["+1234567890"]
    entry = audit_rows(app, "configure-alerts")[-1]
    assert entry["source"] == "cli" and entry["arguments"]["sms"] == ["+1234567890"]

    # a channel given replaces that channel only; --clear drops what was stored
    invoke(app, "configure-alerts", "--sms", "+4915112345678")
    assert stored_switch(app, "alert_targets")["sms"] == ["+4915112345678"]
    assert stored_switch(app, "alert_targets")["email"] == ["admin@example.com", "ops@example.com"]
    shown = invoke(app, "configure-alerts")
    assert shown.exit_code == 0 and "+4915112345678" in shown.output
    code, cleared = invoke_json(app, "configure-alerts", "--clear")
    assert code == 0 and cleared["effective"] == {"email": ["ops@example.com"], "sms": [], "webhook": [],
                                                         "apprise": []}


@pytest.mark.parametrize("args, complaint", [
    (["--email", "admin@"], "'admin@' is not an email address"),
    (["--email", "a@example.com", "--email", "not an address"], "'not an address' is not an email address"),
    (["--sms", "1234567890"], "is not an E.164 phone number"),
    (["--sms", "+0123"], "is not an E.164 phone number"),
    (["--sms", "+1234567890123456"], "is not an E.164 phone number"),
    (["--webhook", "ftp://alerts.example.com"], "is not an http(s) URL"),
    (["--webhook", "https://"], "is not an http(s) URL"),
    (["--apprise", "nonsense://nowhere"], "'nonsense://***' is not an Apprise URL Apprise can use"),
    (["--apprise", "slack://"], "is not an Apprise URL Apprise can use"),
])
def test_configure_alerts_bad_input_stores_nothing(make_app, args, complaint):
    app, _ = make_app()
    result = invoke(app, "configure-alerts", *args)
    assert result.exit_code == 2 and complaint in result.output
    assert stored_switch(app, "alert_targets") is None and audit_rows(app, "configure-alerts") == []


def test_test_alerts_reaches_every_channel(demo, providers):
    smtp, http = providers
    app = demo
    invoke(app, "configure-alerts", "--email", "admin@example.com", "--sms", "+15551234567",
           "--webhook", f"{http.url}/hook")
    code, data = invoke_json(app, "test-alerts")
    assert code == 0, data
    assert sorted((r["channel"], r["target"], r["ok"]) for r in data["results"]) == [
        ("email", "admin@example.com", True), ("sms", "+15551234567", True), ("webhook", f"{http.url}/hook", True)]
    assert [m["To"] for m in smtp.received()] == ["admin@example.com"]
    assert "Test alert" in smtp.received()[0]["Subject"]
    sms = http.received("/sms")
    assert [s["to"] for s in sms] == ["+15551234567"] and "Test alert" in sms[0]["message"]
    assert http.received("/hook")[0]["subject"].startswith("Test alert")
    assert audit_rows(app, "test-alerts")[-1]["outcome"] == "ok"


def test_test_alerts_includes_the_admins_in_app(make_app, providers):
    smtp, _ = providers
    app, _ = make_app(NOTIFY_EMERGENCY_SMTP_HOST="127.0.0.1", NOTIFY_EMERGENCY_SMTP_PORT=smtp.port)
    result = invoke(app, "test-alerts")
    assert result.exit_code == 0 and "in_app" in result.output
    rows = notification_rows(app)
    assert [(r["title"], r["priority"]) for r in rows] == [("Test alert from flask-notify-emergency", "critical")]


def test_test_alerts_reports_each_failing_target_and_exits_1(demo, providers):
    _, http = providers
    app = demo
    dead = f"http://127.0.0.1:{free_port()}/hook"
    invoke(app, "configure-alerts", "--email", "admin@example.com", "--webhook", dead)
    result = invoke(app, "test-alerts")
    assert result.exit_code == 1
    assert "SOME CHANNELS FAILED" in result.output
    assert "ok   email" in result.output and f"FAIL webhook  {dead}" in result.output
    assert audit_rows(app, "test-alerts")[-1]["outcome"] == "failed"


def test_test_alerts_without_targets_says_how_to_add_them(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_ADMIN_USER_IDS=None)
    result = invoke(app, "test-alerts")
    assert result.exit_code == 1 and "no alert targets are configured: add some with configure-alerts" in result.output


def test_alert_commands_have_help(make_app):
    app, _ = make_app()
    for command in ("configure-alerts", "test-alerts"):
        assert invoke(app, command, "--help").exit_code == 0

"""Alert transports against real local servers: SMTP with STARTTLS, implicit TLS and login
(aiosmtpd with a throwaway certificate), and Apprise URLs (``json://`` to an HTTP receiver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from flask_notify_emergency.communicate.alerts import send_alert
from flask_notify_emergency.config import ConfigError, redacted
from tests.support.cli import audit_rows, invoke, invoke_json, stored_switch
from tests.support.receivers import HttpSink, SmtpSink
from tests.support.services import free_port
from tests.support.tls import self_signed_certificate, server_context

LOGINS = {"alerts": "s3cret-Pass"}


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpSink]:
    sink = SmtpSink(tls=server_context(*certificate), logins=LOGINS)
    yield sink
    sink.stop()


@pytest.fixture
def receiver() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.stop()


def smtp_config(port: int, security: str, ca_file: Path | None, username: str | None = "alerts",
                password: str | None = LOGINS["alerts"]) -> dict[str, Any]:
    return {"NOTIFY_EMERGENCY_SMTP_HOST": "127.0.0.1", "NOTIFY_EMERGENCY_SMTP_PORT": port,
            "NOTIFY_EMERGENCY_SMTP_SECURITY": security, "NOTIFY_EMERGENCY_SMTP_USERNAME": username,
            "NOTIFY_EMERGENCY_SMTP_PASSWORD": password,
            "NOTIFY_EMERGENCY_SMTP_CA_FILE": str(ca_file) if ca_file else None,
            "NOTIFY_EMERGENCY_ALERT_EMAILS": ["oncall@example.com"], "NOTIFY_EMERGENCY_ALERT_TIMEOUT": 5.0}


def mail(app: Any) -> list[dict[str, Any]]:
    return send_alert(app.extensions["notify_emergency"], "Realtime down", "The canary is lost.", 1,
                      channels=["email"])


# -- SMTP ------------------------------------------------------------------------------------
def test_starttls_and_login_deliver_the_alert(make_app, starttls_server, certificate):
    app, _ = make_app(**smtp_config(starttls_server.port, "starttls", certificate[0]))
    rows = mail(app)
    assert rows == [{"channel": "email", "target": "oncall@example.com", "ok": True, "error": None}]
    [message] = starttls_server.received()
    assert message["Subject"] == "Realtime down" and message["To"] == "oncall@example.com"
    assert starttls_server.sessions == [{"tls": True, "login": "alerts"}]


def test_a_wrong_password_is_a_failed_alert_and_nothing_is_sent(make_app, starttls_server, certificate):
    app, _ = make_app(**smtp_config(starttls_server.port, "starttls", certificate[0], password="wrong"))
    [row] = mail(app)
    assert row["ok"] is False and row["error"].startswith("SMTPAuthenticationError")
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN); every one refused
    assert set(starttls_server.failed_logins) == {"alerts"} and starttls_server.received() == []


def test_an_untrusted_certificate_is_refused_before_the_password_is_sent(make_app, starttls_server):
    app, _ = make_app(**smtp_config(starttls_server.port, "starttls", None))  # the system's CAs only
    [row] = mail(app)
    assert row["ok"] is False and row["error"].startswith("SSLCertVerificationError"), row
    assert starttls_server.failed_logins == [] and starttls_server.received() == []


def test_starttls_required_but_not_offered_never_falls_back_to_clear_text(make_app, certificate):
    plain = SmtpSink()
    try:
        app, _ = make_app(**smtp_config(plain.port, "starttls", certificate[0]))
        [row] = mail(app)
        assert row["ok"] is False and row["error"].startswith("SMTPNotSupportedError"), row
        assert plain.received() == []
    finally:
        plain.stop()


def test_implicit_tls_and_login_deliver_the_alert(make_app, certificate):
    server = SmtpSink(tls=server_context(*certificate), implicit_tls=True, logins=LOGINS)
    try:
        app, _ = make_app(**smtp_config(server.port, "tls", certificate[0]))
        [row] = mail(app)
        assert row["ok"] is True, row
        assert [m["Subject"] for m in server.received()] == ["Realtime down"]
        assert server.sessions == [{"tls": True, "login": "alerts"}]
    finally:
        server.stop()


def test_a_server_that_requires_starttls_refuses_a_clear_text_client(make_app, starttls_server):
    # the default, security 'none', against a server that insists: the refusal is reported
    app, _ = make_app(**smtp_config(starttls_server.port, "none", None, username=None, password=None))
    [row] = mail(app)
    assert row["ok"] is False and starttls_server.received() == []


@pytest.mark.parametrize("config, complaint", [
    ({"NOTIFY_EMERGENCY_SMTP_SECURITY": "ssl"}, "NOTIFY_EMERGENCY_SMTP_SECURITY must be one of 'none', 'starttls', 'tls'"),
    ({"NOTIFY_EMERGENCY_SMTP_USERNAME": "alerts", "NOTIFY_EMERGENCY_SMTP_PASSWORD": "x"},
     "would send the password in clear: set it to 'starttls' or 'tls'"),
    ({"NOTIFY_EMERGENCY_SMTP_USERNAME": "alerts", "NOTIFY_EMERGENCY_SMTP_SECURITY": "tls"},
     "SMTP_USERNAME and NOTIFY_EMERGENCY_SMTP_PASSWORD go together"),
    ({"NOTIFY_EMERGENCY_ALERT_APPRISE_URLS": ["nonsense://nowhere"]}, "is not an Apprise URL Apprise can use"),
])
def test_bad_mail_and_apprise_settings_are_refused_at_init_app(make_app, config, complaint):
    with pytest.raises(ConfigError) as raised:
        make_app(**config)
    assert complaint in str(raised.value)


def test_the_smtp_password_is_redacted_in_the_settings(make_app, starttls_server, certificate):
    app, _ = make_app(**smtp_config(starttls_server.port, "starttls", certificate[0]))
    shown = redacted(app.config)
    assert shown["NOTIFY_EMERGENCY_SMTP_PASSWORD"] == "***"
    assert LOGINS["alerts"] not in str(shown)


# -- Apprise ---------------------------------------------------------------------------------
def test_an_apprise_url_in_the_config_gets_level_1_and_2_alerts(make_app, receiver):
    app, _ = make_app(NOTIFY_EMERGENCY_ALERT_APPRISE_URLS=[f"json://127.0.0.1:{receiver.port}/oncall"],
                      NOTIFY_EMERGENCY_ADMIN_USER_IDS=None)
    ext = app.extensions["notify_emergency"]
    rows = send_alert(ext, "Database unreachable", "Notifications wait in the store.", 1)
    assert [(r["channel"], r["ok"]) for r in rows] == [("apprise", True)], rows
    [document] = receiver.received("/oncall")
    assert document["title"] == "Database unreachable"
    assert document["message"] == "Notifications wait in the store."
    assert document["type"] == "failure"
    send_alert(ext, "Delivery slow", "More than 10% unacknowledged.", 2)
    assert [d["title"] for d in receiver.received("/oncall")] == ["Database unreachable", "Delivery slow"]
    send_alert(ext, "Disk filling", "Backups may fail soon.", 3)  # level 3 is email only
    assert len(receiver.received("/oncall")) == 2


def test_configure_alerts_validates_stores_and_test_alerts_reaches_an_apprise_url(make_app, receiver):
    app, _ = make_app(NOTIFY_EMERGENCY_ADMIN_USER_IDS=None)
    url = f"json://127.0.0.1:{receiver.port}/apprise"
    code, data = invoke_json(app, "configure-alerts", "--apprise", url)
    assert code == 0 and data["effective"]["apprise"] == [url]
    assert stored_switch(app, "alert_targets")["apprise"] == [url]
    assert audit_rows(app, "configure-alerts")[-1]["arguments"]["apprise"] == [f"json://127.0.0.1:{receiver.port}/apprise"]

    code, result = invoke_json(app, "test-alerts")
    assert code == 0, result
    assert [(r["channel"], r["ok"]) for r in result["results"]] == [("apprise", True)]
    [document] = receiver.received("/apprise")
    assert document["title"] == "Test alert from flask-notify-emergency" and document["type"] == "info"

    # a receiver that is gone: the alert fails, and says which target
    dead = f"json://127.0.0.1:{free_port()}/gone"
    invoke(app, "configure-alerts", "--apprise", dead)
    code, result = invoke_json(app, "test-alerts")
    assert code == 1
    [row] = result["results"]
    assert row["ok"] is False and row["target"].startswith("json://127.0.0.1:") and "/gone" in row["target"]
    assert "Apprise could not notify" in row["error"]


def test_apprise_tokens_never_show_in_settings_results_or_the_audit_log(make_app):
    secret = "TIiajkdnlazkcOXrIdevi7FQ"
    url = f"slack://T1JJ3T3L2/A1BRTD4JD/{secret}/#alerts"
    app, _ = make_app(NOTIFY_EMERGENCY_ALERT_APPRISE_URLS=[url], NOTIFY_EMERGENCY_ALERT_TIMEOUT=1.0)
    assert secret not in str(redacted(app.config))
    code, data = invoke_json(app, "configure-alerts", "--apprise", url.replace("#alerts", "#ops"))
    assert code == 0
    shown = invoke(app, "configure-alerts")
    assert shown.exit_code == 0 and "slack://" in shown.output and secret not in shown.output
    assert secret not in str(audit_rows(app, "configure-alerts"))

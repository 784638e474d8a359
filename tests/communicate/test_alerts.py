"""Alerts to admins through a real mail server (aiosmtpd) and a real HTTP receiver on loopback."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from flask_notify_emergency.communicate.alerts import alert_event, send_alert
from flask_notify_emergency.respond import emergency
from tests.conftest import user_id
from tests.support.pages import notification_rows
from tests.support.receivers import HttpSink, SmtpSink
from tests.support.services import free_port

PHONE = "+15550001111"


@pytest.fixture
def sinks() -> Iterator[tuple[SmtpSink, HttpSink]]:
    smtp, http = SmtpSink(), HttpSink()
    yield smtp, http
    smtp.stop()
    http.stop()


@pytest.fixture
def alerting(make_app: Any, sinks: tuple[SmtpSink, HttpSink]) -> tuple[Any, Any, SmtpSink, HttpSink]:
    smtp, http = sinks
    app, _ = make_app(NOTIFY_EMERGENCY_ALERT_EMAILS=["ops@example.com"], NOTIFY_EMERGENCY_ALERT_SMS_NUMBERS=[PHONE],
                      NOTIFY_EMERGENCY_ALERT_WEBHOOKS=[http.url + "/hook"],
                      NOTIFY_EMERGENCY_SMS_GATEWAY_URL=http.url + "/sms", NOTIFY_EMERGENCY_SMTP_HOST="127.0.0.1",
                      NOTIFY_EMERGENCY_SMTP_PORT=smtp.port, NOTIFY_EMERGENCY_ALERT_TIMEOUT=5.0)
    return app, app.extensions["notify_emergency"], smtp, http


def counts(smtp: SmtpSink, http: HttpSink) -> tuple[int, int, int]:
    return len(smtp.received()), len(http.received("/sms")), len(http.received("/hook"))


def test_activation_alerts_every_channel_a_repeat_is_suppressed_and_resolution_says_resolved(alerting):
    app, ext, smtp, http = alerting
    event = emergency.activate(ext, reason="socket queue down", triggered_by="ops", level=1,
                               failure_type="realtime_connection")
    assert counts(smtp, http) == (1, 1, 1)
    mail = smtp.received()[0]
    assert mail["To"] == "ops@example.com"
    assert "Level 1 (critical)" in mail["Subject"] and "socket queue down" in mail["Subject"]
    assert f"Emergency event #{event['id']}: detected." in mail.get_content()
    sms = http.received("/sms")[0]
    assert sms["to"] == PHONE and "socket queue down" in sms["message"] and "Level 1" in sms["message"]
    hook = http.received("/hook")[0]
    assert (hook["level"], hook["event_id"], hook["kind"]) == (1, event["id"], "detected")
    assert hook["event"]["reason"] == "socket queue down"
    admin_rows = notification_rows(app, user_id=user_id(app, "admin"))
    assert len(admin_rows) == 1 and admin_rows[0]["priority"] == "critical"
    assert admin_rows[0]["category"] == "emergency"

    again = emergency.activate(ext, reason="socket queue down again", triggered_by="ops", level=1)
    assert again["already_active"] is True
    assert alert_event(ext, event, "detected") == []  # e.g. another worker noticing the same event
    assert counts(smtp, http) == (1, 1, 1)
    assert len(notification_rows(app, user_id=user_id(app, "admin"))) == 1

    emergency.deactivate(ext, resolved_by="ops", reason="queue restarted")
    assert counts(smtp, http) == (2, 2, 2)
    assert str(smtp.received()[1]["Subject"]).strip().startswith("[RESOLVED] Level 1 (critical)")
    assert "Resolved at:" in smtp.received()[1].get_content()
    assert http.received("/hook")[1]["kind"] == "resolved"


def test_a_second_event_of_the_same_type_while_the_first_is_open_is_grouped(alerting):
    _, ext, smtp, http = alerting
    first = emergency.open_event(ext, level=1, failure_type="realtime_connection", reason="queue down",
                                 triggered_by="monitor")
    emergency.open_event(ext, level=1, failure_type="realtime_connection", reason="queue down (2nd worker)",
                         triggered_by="monitor")
    assert counts(smtp, http) == (1, 1, 1)
    # once the first is over, a new emergency of that type is news again
    emergency.resolve_event(ext, first["id"], "ops", True)
    assert counts(smtp, http) == (2, 2, 2)
    emergency.open_event(ext, level=1, failure_type="realtime_connection", reason="queue down again",
                         triggered_by="monitor")
    assert counts(smtp, http) == (3, 3, 3)


@pytest.mark.parametrize("level, expected", [(2, (1, 1, 0, 1)), (3, (1, 0, 0, 0)), (4, (0, 0, 0, 1))])
def test_the_escalation_matrix_picks_channels_by_level(alerting, level, expected):
    app, ext, smtp, http = alerting
    emergency.open_event(ext, level=level, failure_type="shared_state", reason="redis flaky", triggered_by="monitor")
    in_app = len(notification_rows(app, user_id=user_id(app, "admin")))
    assert counts(smtp, http) + (in_app,) == expected


def test_send_alert_reports_each_target_and_names_what_to_fix(alerting):
    app, ext, smtp, http = alerting
    app.config["NOTIFY_EMERGENCY_ALERT_WEBHOOKS"] = [http.url + "/hook", f"http://127.0.0.1:{free_port()}/closed"]
    rows = send_alert(ext, "Rollback starting", "Flash-only delivery in 5 minutes.", "info",
                      channels=["email", "webhook", "sms"])
    by_target = {(r["channel"], r["target"]): r for r in rows}
    assert by_target[("email", "ops@example.com")]["ok"] is True
    assert by_target[("webhook", http.url + "/hook")]["ok"] is True
    closed = [r for r in rows if r["target"] and r["target"].endswith("/closed")][0]
    assert closed["ok"] is False and "URLError" in closed["error"]
    assert by_target[("sms", PHONE)]["ok"] is True
    assert http.received("/hook")[0]["severity"] == 4  # 'info' is the lowest level

    app.config["NOTIFY_EMERGENCY_SMS_GATEWAY_URL"] = None
    rows = send_alert(ext, "Test", "Test.", "low", channels=["sms"])
    assert rows == [{"channel": "sms", "target": None, "ok": False,
                     "error": "no SMS gateway: set NOTIFY_EMERGENCY_SMS_GATEWAY_URL"}]
    with pytest.raises(ValueError, match="unknown alert channel.*pager"):
        send_alert(ext, "Test", "Test.", 1, channels=["pager"])
    with pytest.raises(ValueError, match="unknown severity 'dire'"):
        send_alert(ext, "Test", "Test.", "dire")


def test_an_unreachable_mail_server_is_a_failed_row_not_an_exception(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_ALERT_EMAILS=["ops@example.com"], NOTIFY_EMERGENCY_SMTP_HOST="127.0.0.1",
                      NOTIFY_EMERGENCY_SMTP_PORT=free_port())
    ext = app.extensions["notify_emergency"]
    rows = send_alert(ext, "Test", "Test.", 3)
    assert len(rows) == 1 and rows[0]["ok"] is False and "ConnectionRefusedError" in rows[0]["error"]
    event = emergency.activate(ext, reason="mail down too", triggered_by="ops", level=3)
    assert event["already_active"] is False  # the activation stands although its alert failed


def test_a_newline_in_the_reason_collapses_in_the_subject_and_stays_whole_in_the_body(alerting):
    app, ext, smtp, http = alerting
    reason = "queue down\r\nBcc: intruder@example.com\n\nsecond paragraph"
    emergency.activate(ext, reason=reason, triggered_by="ops", level=1, failure_type="realtime_connection")
    assert counts(smtp, http) == (1, 1, 1)
    mail = smtp.received()[0]
    subject = str(mail["Subject"])
    assert "\n" not in subject and "\r" not in subject
    assert "queue down Bcc: intruder@example.com second paragraph" in " ".join(subject.split())
    assert mail["Bcc"] is None and mail["To"] == "ops@example.com"
    body = mail.get_content()
    assert "queue down" in body and "Bcc: intruder@example.com" in body and "second paragraph" in body
    assert body.index("Bcc: intruder") > body.index("queue down")  # the lines kept, in order
    hook = http.received("/hook")[0]
    assert hook["event"]["reason"] == reason


"""Alert channels: email (SMTP), SMS (an HTTP gateway), webhooks, Apprise, and in-app notifications.

Each channel lists its targets and sends one message to one target, raising on failure
(the caller turns that into a result row). Email, SMS, webhook and Apprise targets come from
the config (``NOTIFY_EMERGENCY_ALERT_EMAILS`` / ``_ALERT_SMS_NUMBERS`` / ``_ALERT_WEBHOOKS`` /
``_ALERT_APPRISE_URLS``) plus those stored with ``configure-alerts`` (:mod:`..alert_targets`,
when present); in-app targets are the admins from ``NOTIFY_EMERGENCY_ADMIN_USER_IDS``.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from ...config import redact_apprise_url
from ...detect import LEVELS
from .targets import effective_targets

SMS_MAX_LENGTH = 480


@dataclass(frozen=True)
class Alert:
    """One alert, whatever the channel."""

    subject: str
    body: str
    level: int
    kind: str = "manual"
    event_id: int | None = None
    event: dict[str, Any] | None = field(default=None, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "body": self.body, "severity": self.level,
                "level": self.level, "level_name": LEVELS[self.level].name, "kind": self.kind,
                "event_id": self.event_id, "event": self.event}


def _targets(ext: Any, channel: str, config_key: str) -> list[str]:
    return list(effective_targets(ext).get(channel, []))


class EmailChannel:
    """Plain-text mail through ``NOTIFY_EMERGENCY_SMTP_HOST``:``SMTP_PORT`` (``SMTP_SECURITY``:
    in clear, STARTTLS or implicit TLS; ``SMTP_USERNAME`` / ``SMTP_PASSWORD`` to log in)."""

    name = "email"
    config_key = "NOTIFY_EMERGENCY_ALERT_EMAILS"

    def targets(self, ext: Any) -> list[str]:
        return _targets(ext, self.name, self.config_key)

    def send(self, ext: Any, target: str, alert: Alert, timeout: float) -> None:
        send_mail(ext, target, alert.subject, alert.body, timeout)


def send_mail(ext: Any, to: str, subject: str, body: str, timeout: float) -> None:
    """One plain-text mail; raises ``smtplib.SMTPException`` / ``OSError`` on failure."""
    cfg = ext.app.config
    msg = EmailMessage()
    msg["Subject"] = " ".join(subject.split())  # a header is one line: a newline would drop the mail
    msg["From"] = cfg["NOTIFY_EMERGENCY_SMTP_SENDER"]
    msg["To"] = to
    msg.set_content(body)
    host, port = cfg["NOTIFY_EMERGENCY_SMTP_HOST"], cfg["NOTIFY_EMERGENCY_SMTP_PORT"]
    security = cfg["NOTIFY_EMERGENCY_SMTP_SECURITY"]
    context = ssl.create_default_context(cafile=cfg["NOTIFY_EMERGENCY_SMTP_CA_FILE"]) if security != "none" else None
    smtp = (smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) if security == "tls"
            else smtplib.SMTP(host, port, timeout=timeout))
    with smtp:
        if security == "starttls":
            # raises SMTPNotSupportedError when the server offers no STARTTLS: never falls
            # back to sending (or logging in) in clear
            smtp.starttls(context=context)
        if cfg["NOTIFY_EMERGENCY_SMTP_USERNAME"]:
            smtp.login(cfg["NOTIFY_EMERGENCY_SMTP_USERNAME"], cfg["NOTIFY_EMERGENCY_SMTP_PASSWORD"])
        smtp.send_message(msg)


def _post_json(url: str, document: dict[str, Any], timeout: float) -> None:
    data = json.dumps(document, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "flask-notify-emergency"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status} from {url}")


class SmsChannel:
    """A JSON POST ``{"to": number, "message": text}`` to ``NOTIFY_EMERGENCY_SMS_GATEWAY_URL``."""

    name = "sms"
    config_key = "NOTIFY_EMERGENCY_ALERT_SMS_NUMBERS"

    def targets(self, ext: Any) -> list[str]:
        return _targets(ext, self.name, self.config_key)

    def missing(self, ext: Any) -> str | None:
        if not ext.app.config["NOTIFY_EMERGENCY_SMS_GATEWAY_URL"]:
            return "no SMS gateway: set NOTIFY_EMERGENCY_SMS_GATEWAY_URL"
        return None

    def send(self, ext: Any, target: str, alert: Alert, timeout: float) -> None:
        text = f"{alert.subject}. {alert.body}"
        if len(text) > SMS_MAX_LENGTH:
            text = text[: SMS_MAX_LENGTH - 1] + "\u2026"
        _post_json(ext.app.config["NOTIFY_EMERGENCY_SMS_GATEWAY_URL"], {"to": target, "message": text}, timeout)


class WebhookChannel:
    """A JSON POST of the whole alert (subject, body, level, kind, event) to each URL."""

    name = "webhook"
    config_key = "NOTIFY_EMERGENCY_ALERT_WEBHOOKS"

    def targets(self, ext: Any) -> list[str]:
        return _targets(ext, self.name, self.config_key)

    def send(self, ext: Any, target: str, alert: Alert, timeout: float) -> None:
        _post_json(target, alert.as_json(), timeout)


class AppriseChannel:
    """Any service Apprise speaks (Slack, Teams, PagerDuty, Opsgenie, ntfy, Matrix, …), one
    Apprise URL per target; needs the ``apprise`` package (the ``[apprise]`` extra)."""

    name = "apprise"
    config_key = "NOTIFY_EMERGENCY_ALERT_APPRISE_URLS"

    def targets(self, ext: Any) -> list[str]:
        return _targets(ext, self.name, self.config_key)

    @staticmethod
    def label(target: str) -> str:
        """How a target is shown in results and the audit log: its secrets masked."""
        return redact_apprise_url(target)

    def send(self, ext: Any, target: str, alert: Alert, timeout: float) -> None:
        import apprise

        notifier = apprise.Apprise()
        if not notifier.add(target):
            raise ValueError(f"Apprise cannot use {self.label(target)}: check the URL's form")
        for service in notifier:
            # Apprise's own time limits, set to the alert's: connect and read
            service.socket_connect_timeout = service.socket_read_timeout = timeout
        if alert.kind == "resolved":
            notify_type = apprise.NotifyType.SUCCESS
        else:
            notify_type = {1: apprise.NotifyType.FAILURE, 2: apprise.NotifyType.FAILURE,
                           3: apprise.NotifyType.WARNING}.get(alert.level, apprise.NotifyType.INFO)
        # Apprise answers only True/False; the reason is what it logs
        with apprise.LogCapture(level=logging.WARNING) as log:
            delivered = notifier.notify(title=alert.subject, body=alert.body, notify_type=notify_type)
        if not delivered:
            reason = " ".join(log.getvalue().split()) or "no reason given"
            raise OSError(f"Apprise could not notify {self.label(target)}: {reason}")


class InAppChannel:
    """A critical notification to each admin, through the extension's own ``send()``
    (in emergency mode it reaches them by flash and polling, like any notification)."""

    name = "in_app"
    config_key = "NOTIFY_EMERGENCY_ADMIN_USER_IDS"

    def targets(self, ext: Any) -> list[str]:
        admins = ext.app.config.get(self.config_key)
        if admins is None:
            return []
        with ext.app.app_context():
            return [str(uid) for uid in admins()]

    def send(self, ext: Any, target: str, alert: Alert, timeout: float) -> None:
        cfg = ext.app.config
        title = alert.subject[: cfg["NOTIFY_EMERGENCY_TITLE_MAX_LENGTH"]]
        message = alert.body[: cfg["NOTIFY_EMERGENCY_MESSAGE_MAX_LENGTH"]]
        with ext.app.app_context():
            ext.dispatcher.send(target, title, message, priority="critical", category="emergency",
                                data={"alert": alert.kind, "event_id": alert.event_id, "level": alert.level})


CHANNELS: dict[str, Any] = {c.name: c for c in (InAppChannel(), EmailChannel(), SmsChannel(), WebhookChannel(),
                                                 AppriseChannel())}

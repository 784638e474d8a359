"""Emergency alerts to administrators: email, SMS, webhooks and in-app notifications,
by the runbook's escalation matrix, deduplicated and cooled down. See :mod:`.dispatch`."""

from __future__ import annotations

from .channels import CHANNELS, Alert
from .dispatch import (
    ESCALATION,
    alert_event,
    alert_unrecorded,
    compose,
    init_app,
    send_alert,
    send_email,
    severity_level,
    test_alerts,
)

__all__ = [
    "CHANNELS", "ESCALATION", "Alert", "alert_event", "alert_unrecorded", "compose", "init_app",
    "send_alert", "send_email", "severity_level", "test_alerts",
]

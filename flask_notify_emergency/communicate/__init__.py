"""Telling people: alerts to admins by the escalation matrix (:mod:`.alerts`: email, SMS,
webhooks, in-app; deduplicated, cooled down; their targets), notices to users and admins,
user communication (banners, fallback notifications), the public status page and the team
status, incidents and incident documents.

Uses :mod:`..respond` (events, the banner switch), :mod:`..detect` (levels) and the shared
top-level modules.
"""

from __future__ import annotations

from . import alerts, incidents, user_communication
from .alerts import alert_event, alert_unrecorded, send_alert, send_email, test_alerts
from .alerts import targets as alert_targets
from .incident_docs import TEMPLATES, duration_text, render_blank, render_incident, write_report
from .incidents import check_day, create_incident, list_incidents, parse_reference, reference
from .operator_notice import TARGET_HELP, NoticeError, send_notice
from .status_page import (
    DASHBOARD_STATUSES,
    PUBLIC_STATUSES,
    dashboard_status,
    public_status,
    public_view,
    set_dashboard_status,
    set_public_status,
)
from .user_communication import send_user_notification

__all__ = [
    "alert_targets", "alert_event", "alert_unrecorded", "alerts", "check_day", "create_incident", "dashboard_status",
    "DASHBOARD_STATUSES", "duration_text", "incidents", "list_incidents", "NoticeError",
    "parse_reference", "public_status", "PUBLIC_STATUSES", "public_view", "reference",
    "render_blank", "render_incident", "send_alert", "send_email", "send_notice",
    "send_user_notification", "set_dashboard_status", "set_public_status", "TARGET_HELP",
    "TEMPLATES", "test_alerts", "user_communication", "write_report",
]

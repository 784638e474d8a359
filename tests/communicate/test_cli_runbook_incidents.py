"""Incidents and their documentation: ``create-incident``, ``document-incident``,
``generate-report-template`` (the runbook's "Required Documentation")."""

from __future__ import annotations

import os
from typing import Any

import pytest

from flask_notify_emergency.communicate.incident_docs import reports_dir
from tests.conftest import user_id
from tests.support.cli import audit_rows, event_rows, invoke, invoke_json, stored_switch

SECTIONS = ("## 1. Emergency event log", "## 2. Recovery actions taken", "## 3. Timeline of events",
            "## 4. Impact assessment", "## 5. Root cause analysis", "## 6. Lessons learned",
            "## 7. Improvement recommendations")


@pytest.fixture
def demo(make_app: Any, tmp_path: Any) -> Any:
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    return app


def incident_rows(app: Any) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    ext = app.extensions["notify_emergency"]
    t = ext.models.Incident.__table__
    with ext.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def an_emergency(app: Any) -> int:
    """An emergency with the runbook's first steps taken, resolved by an operator."""
    invoke(app, "activate-emergency", "--reason", "Critical notification system failure")
    invoke(app, "send-user-notification", "--message", "Please refresh.", "--target", f"user:{user_id(app, 'alice')}")
    invoke(app, "update-status-page", "--status", "degraded", "--message", "Notifications are delayed.")
    event_id = int(event_rows(app)[-1]["id"])
    invoke(app, "deactivate-emergency", "--force", "--reason", "socket queue restored")
    return event_id


def test_create_incident_records_it_linked_to_the_open_emergency(demo):
    app = demo
    invoke(app, "activate-emergency", "--reason", "socket queue down")
    event = event_rows(app)[-1]
    code, data = invoke_json(app, "create-incident", "--title", "Notification System Emergency",
                             "--priority", "critical", "--assignee", "senior-admin")
    assert code == 0
    incident = data["incident"]
    assert (incident["priority"], incident["assignee"], incident["event_id"]) == ("critical", "senior-admin", event["id"])
    assert incident["reference"].startswith("incident_") and incident["reference"].endswith(f"_{incident['id']:03d}")
    assert [(r["title"], r["status"]) for r in incident_rows(app)] == [("Notification System Emergency", "open")]
    assert stored_switch(app, "mode") == "emergency"  # an incident never changes the delivery mode
    assert [a["action"] for a in event_rows(app)[-1]["actions"]][-1] == "create-incident"
    entry = audit_rows(app, "create-incident")[-1]
    assert entry["source"] == "cli" and entry["event_id"] == event["id"]


def test_an_incident_without_an_emergency_is_unlinked_and_leaves_mode_alone(demo):
    app = demo
    result = invoke(app, "create-incident", "--title", "Slow deliveries", "--priority", "low")
    assert result.exit_code == 0 and "not linked to an emergency event" in result.output
    assert incident_rows(app)[0]["event_id"] is None and event_rows(app) == []
    assert stored_switch(app, "mode", "normal") == "normal"


@pytest.mark.parametrize("args, complaint", [
    (["--title", "x", "--priority", "urgent"], "'urgent' is not one of 'critical', 'high', 'medium', 'low'"),
    (["--title", "  ", "--priority", "high"], "--title is required"),
    (["--title", "x" * 201, "--priority", "high"], "the limit is 200"),
    (["--title", "x", "--priority", "high", "--assignee", " "], "--assignee must not be empty"),
    (["--title", "x", "--priority", "high", "--event-id", "77"], "no emergency event #77"),
])
def test_create_incident_bad_input_records_nothing(demo, args, complaint):
    app = demo
    result = invoke(app, "create-incident", *args)
    assert result.exit_code == 2 and complaint in result.output
    assert incident_rows(app) == [] and audit_rows(app, "create-incident") == []


def test_document_incident_fills_every_required_section_from_the_stored_event(demo):
    app = demo
    event_id = an_emergency(app)
    invoke(app, "create-incident", "--title", "Socket queue outage", "--priority", "high", "--event-id", str(event_id))
    code, data = invoke_json(app, "document-incident", "--event-id", str(event_id), "--template", "standard")
    assert code == 0
    path = data["path"]
    assert os.path.dirname(path) == reports_dir(app.extensions["notify_emergency"])
    assert os.path.dirname(path) == os.path.join(os.path.dirname(app.config["NOTIFY_EMERGENCY_BACKUP_DIR"]), "reports")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    for section in SECTIONS:
        assert section in text, section
    assert "Reason: Critical notification system failure" in text
    assert "activate-emergency [ok]" in text and "deactivate-emergency [ok]" in text
    assert "update-status-page [ok]" in text  # the audit entries of the event are in the timeline
    assert "#1 [high] Socket queue outage" in text
    assert "Resolved: " in text and "still open" not in text
    assert "Notifications created during the event: " in text


def test_document_incident_takes_the_runbook_id_form_and_writes_where_told(demo, tmp_path):
    app = demo
    event_id = an_emergency(app)
    day = event_rows(app)[-1]["detected_at"].strftime("%Y%m%d")
    target = tmp_path / "incident.md"
    result = invoke(app, "document-incident", "--event-id", f"emergency_{day}_{event_id:03d}", "--template", "brief",
                    "--output", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith(f"# Incident summary: emergency_{day}_{event_id:03d}")

    again = invoke(app, "document-incident", "--event-id", str(event_id), "--output", str(target))
    assert again.exit_code == 2 and "exists" in again.output and "--force" in again.output
    forced = invoke(app, "document-incident", "--event-id", str(event_id), "--output", str(target), "--force")
    assert forced.exit_code == 0 and target.read_text().startswith("# Incident report")


@pytest.mark.parametrize("event_ref, complaint", [
    ("42", "no emergency event #42"),
    ("emergency_19990101_001", "not 1999-01-01"),
    ("drill_20250830_001", "is not a valid emergency id"),
    ("abc", "is not a valid emergency id"),
])
def test_document_incident_bad_event_id(demo, event_ref, complaint):
    app = demo
    an_emergency(app)
    result = invoke(app, "document-incident", "--event-id", event_ref)
    assert result.exit_code == 2 and complaint in result.output
    assert not os.path.exists(reports_dir(app.extensions["notify_emergency"]))


def test_generate_report_template_has_every_section_blank(demo):
    app = demo
    result = invoke(app, "generate-report-template", "--output", "-")
    assert result.exit_code == 0
    for section in SECTIONS:
        assert section in result.output, section
    assert "_To be completed._" in result.output and "#" in result.output
    code, data = invoke_json(app, "generate-report-template", "--template", "brief")
    assert code == 0 and os.path.basename(data["path"]).startswith("incident-report-template-brief-")
    with open(data["path"], encoding="utf-8") as fh:
        assert fh.read().startswith("# Incident summary")


def test_incident_commands_have_help(demo):
    for command in ("create-incident", "document-incident", "generate-report-template"):
        result = invoke(demo, command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command

"""Communication and documentation commands: ``update-dashboard``, ``update-status-page``,
``send-user-notification``, ``generate-status-report``, ``create-incident``,
``document-incident``, ``generate-report-template``.

Each state change is stored in the database (every worker sees it) and audited with
source ``cli``.
"""

from __future__ import annotations

from typing import Any

import click

from ..communicate import (
    DASHBOARD_STATUSES,
    PUBLIC_STATUSES,
    TEMPLATES,
    NoticeError,
    alert_targets,
    check_day,
    create_incident,
    incidents,
    parse_reference,
    reference,
    render_blank,
    render_incident,
    set_dashboard_status,
    set_public_status,
    user_communication,
    write_report,
)
from ..config import BANNER_LEVELS, PRIORITIES
from ..learn import status_report
from ..respond import get_event
from ..models import MAX_ROW_ID
from . import emergency_group
from .output import (
    SOURCE,
    actor,
    done,
    ext_state,
    fail,
    format_with_json_alias,
    json_option,
    report,
    to_json,
    usage,
    with_errors,
)


@emergency_group.command("update-dashboard")
@click.option("--status", type=click.Choice(DASHBOARD_STATUSES), required=True, help="The team's status.")
@click.option("--message", required=True, help="What the team should know, in a sentence.")
@json_option
@with_errors
def update_dashboard_command(status: str, message: str, as_json: bool) -> None:
    """Set the status message shown on the admin dashboard and by 'status'."""
    result = set_dashboard_status(ext_state(), status, message, actor(), SOURCE)
    value = result["dashboard_status"]
    report(result, as_json, [f"Dashboard status: {value['status']}: {value['message']}"])


@emergency_group.command("update-status-page")
@click.option("--status", type=click.Choice(PUBLIC_STATUSES), required=True, help="The public status.")
@click.option("--message", required=True, help="What users should read on the status page.")
@json_option
@with_errors
def update_status_page_command(status: str, message: str, as_json: bool) -> None:
    """Set the public status page; any status but 'operational' also shows a banner to users."""
    result = set_public_status(ext_state(), status, message, actor(), SOURCE)

    def lines() -> list[str]:
        page = result["status_page"]
        out = [f"Status page: {page['label']}: {page['message']}"]
        if result["banner"]:
            out.append(f"Banner #{result['banner']['id']} ({result['banner']['level']}) shows on every page.")
        if result["banners_removed"]:
            out.append(f"Removed {result['banners_removed']} earlier status banner(s).")
        return out

    report(result, as_json, lines)


@emergency_group.command("send-user-notification")
@click.option("--message", required=True, help="What users should know.")
@click.option("--title", help="A short title (default: 'Service notice').")
@click.option("--channel", type=click.Choice(user_communication.CHANNELS), default="fallback", show_default=True,
              help="fallback: banner / flash / polling only, never the socket; all: the normal path.")
@click.option("--target", default="all", show_default=True, help="all, admins, or user:ID[,ID...].")
@click.option("--level", type=click.Choice(BANNER_LEVELS), default="warning", show_default=True,
              help="Banner level, for --target all.")
@click.option("--priority", type=click.Choice(PRIORITIES), default="high", show_default=True,
              help="Notification priority, for named users.")
@json_option
@with_errors
def send_user_notification_command(message: str, title: str | None, channel: str, target: str, level: str,
                                   priority: str, as_json: bool) -> None:
    """Tell users what is going on, through the fallback channels or the normal path."""
    try:
        result = user_communication.send_user_notification(ext_state(), message=message, title=title, channel=channel,
                                        target=target, actor=actor(), source=SOURCE, level=level,
                                        priority=priority)
    except NoticeError as exc:
        fail(str(exc), as_json=as_json)

    def lines() -> list[str]:
        if result["banner"]:
            banner = result["banner"]
            return [f"Banner #{banner['id']} shows on every page for every user"
                    + (" (also pushed live)." if banner.get("live") else ".")]
        how = ("the fallbacks (flash on the next page, or the client's poll)" if channel == "fallback"
               else "the normal path (real time when possible, the fallbacks otherwise)")
        return [f"Sent to {len(result['notifications'])} user(s) through {how}:"] + [
            f"  user {n['user_id']}: notification #{n['notification_id']}" for n in result["notifications"]]

    report(result, as_json, lines)


@emergency_group.command("generate-status-report")
@click.option("--format", "fmt", type=click.Choice(status_report.FORMATS), default="markdown", show_default=True)
@click.option("--recipients", help="Comma-separated email addresses to mail it to (with --format email).")
@click.option("--no-health", is_flag=True, help="Leave out the health checks (they send a canary).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the same as --format json).")
def generate_status_report_command(fmt: str, recipients: str | None, no_health: bool, as_json: bool) -> None:
    """Status, mode, open event, health, backlog and recent actions, for the team."""
    fmt = format_with_json_alias(fmt, as_json)
    to: list[str] = []
    if recipients is not None:
        if fmt != "email":
            usage("--recipients needs --format email.", "--recipients")
        try:
            to = alert_targets.parse_emails(recipients, "--recipients")
        except ValueError as exc:
            usage(str(exc), "--recipients")
        if not to:
            usage("--recipients is empty: give addresses separated by commas.", "--recipients")
    ext = ext_state()
    data = status_report.gather(ext, include_health=not no_health)
    if fmt == "json":
        click.echo(to_json(data))
        return
    rendered = status_report.render(ext, data, fmt)
    if fmt == "markdown":
        click.echo(rendered["body"])
        return
    if not to:
        click.echo(f"Subject: {rendered['subject']}\n\n{rendered['body']}")
        return
    results = status_report.mail(ext, to, data, actor(), SOURCE)
    for r in results:
        click.echo(f"  {'sent' if r.get('ok') else 'FAILED'} to {r.get('target')}"
                   + ("" if r.get("ok") else f": {r.get('error')}"))
    done(all(r.get("ok") for r in results))


@emergency_group.command("create-incident")
@click.option("--title", required=True, help="What the incident is about.")
@click.option("--priority", type=click.Choice(incidents.PRIORITIES), required=True)
@click.option("--assignee", help="Who owns it.")
@click.option("--event-id", type=click.IntRange(1, MAX_ROW_ID),
              help="Link it to this event (default: the open emergency, if any).")
@json_option
@with_errors
def create_incident_command(title: str, priority: str, assignee: str | None, event_id: int | None,
                            as_json: bool) -> None:
    """Record an incident (the runbook's incident ticket), linked to the open emergency."""
    incident = create_incident(ext_state(), title=title, priority=priority, assignee=assignee,
                               actor=actor(), source=SOURCE, event_id=event_id)
    report({"ok": True, "incident": incident}, as_json, [
        f"Incident #{incident['id']} ({incident['reference']}) [{incident['priority']}] {incident['title']}"
        + (f", assigned to {incident['assignee']}" if incident["assignee"] else "")
        + (f", linked to emergency event #{incident['event_id']}." if incident["event_id"] else
           ", not linked to an emergency event (none is open).")])


def _write(ext: Any, text: str, name: str, output: str | None, force: bool, as_json: bool,
           data: dict[str, Any]) -> None:
    if output == "-":
        click.echo(text)
        return
    try:
        path = write_report(ext, text, name, output, force)
    except OSError as exc:
        fail(f"cannot write the report: {exc}", as_json=as_json)
    report(dict(data, ok=True, path=path), as_json, [f"Report written to {path}"])


@emergency_group.command("document-incident")
@click.option("--event-id", required=True, help="The event: its number, or emergency_YYYYMMDD_NNN.")
@click.option("--template", type=click.Choice(TEMPLATES), default="standard", show_default=True)
@click.option("--output", help="File to write ('-' for standard output); default: the reports directory.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@json_option
@with_errors
def document_incident_command(event_id: str, template: str, output: str | None, force: bool,
                              as_json: bool) -> None:
    """Write the incident report of one event, pre-filled from what was stored."""
    ext = ext_state()
    try:
        number, day = parse_reference(event_id, "emergency")
    except ValueError as exc:
        usage(str(exc), "--event-id")
    event = get_event(ext, number)
    if event is None:
        usage(f"no emergency event #{number}: check the id (the dashboard lists events).", "--event-id")
    check_day(day, _started(event), f"event #{number}")
    text = render_incident(ext, number, template)
    name = f"{reference('emergency', number, _started(event))}-{template}"
    _write(ext, text, name, output, force, as_json, {"event_id": number, "template": template})


def _started(event: dict[str, Any]) -> Any:
    import datetime as dt

    stamp = event.get("detected_at") or event.get("started_at")
    return dt.datetime.fromisoformat(stamp.rstrip("Z")) if stamp else None


@emergency_group.command("generate-report-template")
@click.option("--template", type=click.Choice(TEMPLATES), default="standard", show_default=True)
@click.option("--output", help="File to write ('-' for standard output); default: the reports directory.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@json_option
@with_errors
def generate_report_template_command(template: str, output: str | None, force: bool, as_json: bool) -> None:
    """Write a blank incident report with the runbook's required sections."""
    ext = ext_state()
    _write(ext, render_blank(ext, template), f"incident-report-template-{template}", output, force, as_json,
           {"template": template})

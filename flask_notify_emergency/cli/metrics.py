"""Monitoring commands: ``configure-alerts``, ``test-alerts``, ``generate-metrics``,
``track-improvements``.

The numbers come from :mod:`..metrics` through :mod:`..kpi_report`, so the CLI and the
dashboard never disagree; alert targets live in the control table (:mod:`..alert_targets`).
"""

from __future__ import annotations

from typing import Any

import click

from ..communicate import alert_targets, test_alerts
from ..config import redact_apprise_url
from ..learn import kpi_report
from . import emergency_group
from .output import (
    SOURCE,
    actor,
    done,
    ext_state,
    fail,
    format_with_json_alias,
    json_option,
    mark,
    report,
    to_json,
    with_errors,
)


@emergency_group.command("configure-alerts")
@click.option("--email", multiple=True, help="Email address(es); repeat or separate with commas.")
@click.option("--sms", multiple=True, help="Phone number(s) in E.164 form, e.g. +15551234567.")
@click.option("--webhook", multiple=True, help="http(s) URL(s) that receive a JSON POST.")
@click.option("--apprise", multiple=True,
              help="Apprise URL(s) (slack://…, pagerduty://…, ntfy://…, json://…); repeat the option for each.")
@click.option("--clear", is_flag=True, help="Drop every stored target first (config targets stay).")
@json_option
@with_errors
def configure_alerts_command(email: tuple[str, ...], sms: tuple[str, ...], webhook: tuple[str, ...],
                             apprise: tuple[str, ...], clear: bool, as_json: bool) -> None:
    """Set who receives emergency alerts (stored; added to the NOTIFY_EMERGENCY_ALERT_* config).

    Each channel given replaces that channel's stored targets. Without options, shows them.
    """
    ext = ext_state()
    data: dict[str, Any]  # the command's JSON result, the shape configure() returns
    if not (email or sms or webhook or apprise or clear):
        data = {"ok": True, "stored": alert_targets.stored_targets(ext), "configured": alert_targets.configured_targets(ext),
                "effective": alert_targets.effective_targets(ext)}
    else:
        data = alert_targets.configure(ext, actor=actor(), source=SOURCE, email=list(email) or None, sms=list(sms) or None,
                         webhook=list(webhook) or None, apprise=list(apprise) or None, clear=clear)

    def lines() -> list[str]:
        out = ["Alert targets (config + stored):"]
        for channel in alert_targets.CHANNELS:
            targets = [redact_apprise_url(t) if channel == "apprise" else t for t in data["effective"][channel]]
            out.append(f"  {channel:<8} {', '.join(targets) if targets else 'none'}")
        return out

    report(data, as_json, lines)


@emergency_group.command("test-alerts")
@json_option
def test_alerts_command(as_json: bool) -> None:
    """Send a test alert through every configured channel and report each target's result."""
    ext = ext_state()
    try:
        data = test_alerts(ext, actor=actor(), source=SOURCE)
    except LookupError as exc:
        fail(str(exc), as_json=as_json)

    def lines() -> list[str]:
        out = [f"Test alert: {'every channel delivered' if data['ok'] else 'SOME CHANNELS FAILED'}"]
        for r in data["results"]:
            out.append(f"  {mark(r.get('ok'))} {r.get('channel', '?'):<8} {r.get('target', '')}"
                       + ("" if r.get("ok") else f"  {r.get('error')}"))
        return out

    report(data, as_json, lines)
    done(data["ok"])


def _kpi_lines(data: dict[str, Any], fmt: str) -> list[str]:
    title = f"Emergency metrics, {data['period'].replace('_', ' ')} ({data['since']} to {data['until']})"
    counts = data["counts"]
    tail = (f"{counts['events']} event(s) ({counts['open']} open, {counts['resolved']} resolved, "
            f"{counts['recovered']} recovered); {counts['notifications']} notification(s), "
            f"{counts['delivered']} delivered.")
    if fmt == "markdown":
        out = [f"# {title}", "", "| KPI | value | target | status |", "|---|---|---|---|"]
        out += [f"| {k['label']} | {kpi_report.show(k['kind'], k['value'])} | {k['target']} | "
                f"{'met' if k['met'] else 'missed' if k['met'] is False else '-'} |" for k in data["kpis"]]
        return out + ["", tail] + [f"> {n}" for n in data["notes"]]
    out = [title, f"  {'KPI':<32} {'value':>12}  {'target':<9} status"]
    out += [f"  {k['label']:<32} {kpi_report.show(k['kind'], k['value']):>12}  {k['target']:<9} "
            f"{'met' if k['met'] else 'MISSED' if k['met'] is False else '-'}" for k in data["kpis"]]
    return out + ["  " + tail] + [f"  note: {n}" for n in data["notes"]]


@emergency_group.command("generate-metrics")
@click.option("--period", type=click.Choice(tuple(kpi_report.PERIODS)), default="last_30_days", show_default=True)
@click.option("--format", "fmt", type=click.Choice(kpi_report.FORMATS), default="dashboard", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the same as --format json).")
@with_errors
def generate_metrics_command(period: str, fmt: str, as_json: bool) -> None:
    """MTTD, MTTR, recovery, rollback and delivery rates and user impact, against the runbook's targets."""
    fmt = format_with_json_alias(fmt, as_json)
    data = kpi_report.period_report(ext_state(), period)
    if fmt == "json":
        click.echo(to_json(data))
        return
    for line in _kpi_lines(data, fmt):
        click.echo(line)


@emergency_group.command("track-improvements")
@click.option("--baseline", required=True, help="The date improvements started, as YYYY-MM-DD.")
@json_option
@with_errors
def track_improvements_command(baseline: str, as_json: bool) -> None:
    """Each KPI before and since the baseline date, with the change."""
    data = kpi_report.improvements(ext_state(), baseline)

    def lines() -> list[str]:
        out = [f"Improvements since {data['baseline']}:",
               f"  {'KPI':<32} {'before':>12} {'since':>12} {'change':>14}  trend"]
        for r in data["rows"]:
            trend = "better" if r["improved"] else "worse" if r["improved"] is False else "-"
            out.append(f"  {r['label']:<32} {kpi_report.show(r['kind'], r['before']):>12} {kpi_report.show(r['kind'], r['after']):>12} "
                       f"{kpi_report.show_delta(r['kind'], r['delta']):>14}  {trend}")
        return out + [f"  note: {n}" for n in data["notes"]]

    report(data, as_json, lines)

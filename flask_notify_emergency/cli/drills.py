"""Preparedness commands: ``test-emergency-procedures``, ``validate-recovery``,
``execute-drill``, ``evaluate-drill``.

``test-emergency-procedures`` changes nothing real (it runs on a throwaway copy);
``validate-recovery`` sends test notifications; a drill injects a real fault into the serving
workers, leaves its detection and recovery to the monitor, and takes the fault back at the
end, even on Ctrl-C. Every run is audited with source ``cli``.
"""

from __future__ import annotations

from typing import Any

import click

from ..communicate import check_day, parse_reference
from ..learn import (
    DRILL_CHOICES,
    MAX_DURATION,
    DrillError,
    evaluate_drill,
    execute_drill,
    get_drill,
    parse_participants,
    run_procedure_tests,
    validate_recovery,
)
from . import emergency_group
from .output import SOURCE, actor, done, ext_state, fail, json_option, mark, report, usage, with_errors


def _step_lines(title: str, ok: bool, steps: list[dict[str, Any]], label: str = "name") -> list[str]:
    out = [f"{title}: {'all passed' if ok else 'FAILED'}"]
    width = max([24] + [len(str(s[label])) for s in steps])
    out += [f"  {mark(s['ok'])} {s[label]:<{width}}  {s.get('detail') or ''}" for s in steps]
    return out


@emergency_group.command("test-emergency-procedures")
@json_option
def test_emergency_procedures_command(as_json: bool) -> None:
    """Run activate, fallback delivery, recover and deactivate on a throwaway copy; report each."""
    data = run_procedure_tests(ext_state(), actor=actor(), source=SOURCE)

    def lines() -> list[str]:
        out = _step_lines(f"Emergency procedures (sandbox, {data['seconds']} s)", data["ok"], data["steps"])
        if data.get("error"):
            out.append(f"  error: {data['error']}")
        return out

    report(data, as_json, lines)
    done(data["ok"])


@emergency_group.command("validate-recovery")
@click.option("--user", "user_id", help="Test user id (default: NOTIFY_EMERGENCY_TEST_USER_ID, else the first admin).")
@json_option
def validate_recovery_command(user_id: str | None, as_json: bool) -> None:
    """Check the runbook's Post-Recovery Validation list; exit 1 if any automated check fails."""
    data = validate_recovery(ext_state(), actor=actor(), source=SOURCE, user_id=user_id)
    report(data, as_json, lambda: _step_lines("Post-recovery validation", data["ok"], data["checks"], "checklist")
           + [f"{data['passed']} passed, {data['failed']} failed, {data['manual']} to check by hand."])
    done(data["ok"])


@emergency_group.command("execute-drill")
@click.option("--type", "drill_type", type=click.Choice(DRILL_CHOICES), required=True,
              help="notification_failure (queue hangs), websocket_failure (queue cut), database_failure "
                   "(database_connectivity), redis_failure, multi_component (queue and Redis), "
                   "complete_rollback (rollback, probe, restore).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True, max=MAX_DURATION), default=300.0,
              show_default=True, help="Longest the fault lasts while the monitor has not detected it "
                                      "(complete_rollback: how long it stays rolled back).")
@click.option("--participants", help="Who takes part, comma-separated (required).")
@click.option("--dry-run", is_flag=True, help="Show the plan and check it can run; change nothing.")
@json_option
@with_errors
def execute_drill_command(drill_type: str, duration: float, participants: str | None, dry_run: bool,
                          as_json: bool) -> None:
    """Inject a real fault into the serving workers; the monitor must detect and resolve it."""
    try:
        names = parse_participants(participants)
    except ValueError as exc:
        usage(str(exc), "--participants")
    progress = None if as_json else click.echo
    try:
        data = execute_drill(ext_state(), drill_type=drill_type, duration=duration, participants=names,
                             actor=actor(), source=SOURCE, dry_run=dry_run, progress=progress)
    except DrillError as exc:
        fail(str(exc), as_json=as_json)
    if dry_run:
        report(data, as_json, lambda: [f"Drill plan ({data['type']}):"]
               + [f"  {i}. {s}" for i, s in enumerate(data["plan"], 1)]
               + ([f"  cannot run now: {p}" for p in data["problems"]] or ["  ready to run."]))
        done(data["ok"])
        return
    result = data["result"]

    def seconds(value: Any) -> str:
        return "-" if value is None else f"{value:.2f} s"

    def lines() -> list[str]:
        if result.get("error"):
            out = [f"Drill #{data['id']} ({data['reference']}) {result['status']}: {result['error']}"]
        elif "rollback_seconds" in result:
            out = [f"Drill #{data['id']} ({data['reference']}) {result['status']}: rollback "
                   f"{seconds(result['rollback_seconds'])}, probe by {(result.get('probe') or {}).get('channel')}, "
                   f"restore {seconds(result['restore_seconds'])}, real time back."]
        else:
            out = [f"Drill #{data['id']} ({data['reference']}) {result['status']}: monitor event "
                   f"#{result['event_id']}, MTTD {seconds(result['detection_seconds'])}, "
                   f"MTTR {seconds(result['recovery_seconds'])}."]
        out.append(f"Evaluate it with: evaluate-drill --drill-id {data['id']}")
        return out

    report(data, as_json, lines)
    done(data["ok"])


@emergency_group.command("evaluate-drill")
@click.option("--drill-id", required=True, help="The drill: its number, or drill_YYYYMMDD_NNN.")
@json_option
@with_errors
def evaluate_drill_command(drill_id: str, as_json: bool) -> None:
    """Score a drill against the runbook's targets (MTTD, MTTR, users kept informed, restored)."""
    ext = ext_state()
    try:
        number, day = parse_reference(drill_id, "drill")
    except ValueError as exc:
        usage(str(exc), "--drill-id")
    drill = get_drill(ext, number)
    if drill is None:
        usage(f"no drill #{number}: check --drill-id (execute-drill prints it).", "--drill-id")
    import datetime as dt

    check_day(day, dt.datetime.fromisoformat(drill["started_at"].rstrip("Z")), f"drill #{number}")
    data = evaluate_drill(ext, number, actor=actor(), source=SOURCE)
    evaluation = data["evaluation"]
    report(data, as_json, lambda: _step_lines(
        f"Drill #{number} ({drill['type']}): {evaluation['passed']}/{evaluation['total']} criteria met "
        f"(score {evaluation['score']})", evaluation["ok"], evaluation["criteria"]))
    done(evaluation["ok"])

"""Response commands: ``activate-emergency``, ``deactivate-emergency``,
``send-notification``, ``enable-fallback``, ``disable-fallback``, ``test-fallback``.

Each writes the database (the truth) and the shared state, so every worker of the app
changes behaviour within a second, and each leaves an audit entry with source ``cli``.
"""

from __future__ import annotations

from typing import Any

import click

from ..communicate import TARGET_HELP, NoticeError, send_notice
from ..config import PRIORITIES
from ..detect import FAILURE_TYPES, LEVELS, parse_level
from ..respond import (
    KINDS,
    FallbackTestError,
    activate,
    deactivate,
    disable_fallback,
    enable_fallback,
    paused_now,
    run_fallback_test,
)
from . import emergency_group
from .output import SOURCE, actor, done, ext_state, fail, json_option, mark, report, usage, with_errors

LEVEL_CHOICES = ", ".join(f"{n} or {lv.name}" for n, lv in LEVELS.items())


def _after_deactivate_notes(ext: Any) -> list[str]:
    """What still keeps notifications off the real-time path after leaving emergency mode."""
    notes = []
    if paused_now(ext)["realtime"]:
        notes.append("real-time delivery is still paused: run 'disable-fallback --type flash' "
                     "(or 'start-services') to resume it")
    if any(b["kind"] == "emergency" for b in ext.store.active_banners()):
        notes.append("the emergency banner still shows: run 'disable-fallback --type broadcast' to dismiss it")
    return notes


@emergency_group.command("activate-emergency")
@click.option("--reason", help="What failed, in a sentence (required).")
@click.option("--triggered-by", help="Who activates it (default: the OS user).")
@click.option("--level", default="critical", show_default=True, help=f"Emergency level: {LEVEL_CHOICES}.")
@click.option("--failure-type", type=click.Choice(FAILURE_TYPES), default="manual", show_default=True,
              help="What kind of failure it is.")
@json_option
@with_errors
def activate_emergency_command(reason: str | None, triggered_by: str | None, level: str,
                               failure_type: str, as_json: bool) -> None:
    """Switch every worker to fallback delivery and open an emergency event."""
    if reason is None or not reason.strip():
        usage('a reason is required: say what failed, e.g. --reason "Critical notification system failure".')
    try:
        number = parse_level(level)
    except ValueError as exc:
        usage(str(exc), "--level")
    ext = ext_state()
    who = actor(triggered_by)
    event = activate(ext, reason=reason, triggered_by=who, level=number, failure_type=failure_type,
                     source=SOURCE, actor=who)

    def lines() -> list[str]:
        if event["already_active"]:
            return [f"Emergency mode was already active (event #{event['id']}, level {event['level']} "
                    f"{event['level_name']}); nothing changed."]
        return [f"Emergency mode ACTIVE in every worker: event #{event['id']}, level {event['level']} "
                f"({event['level_name']}), respond within {event['respond_within_minutes']} min, "
                f"escalation {event['escalation']}.",
                "Notifications now go to the fallbacks (flash on the next page, polling) and pages "
                "show the emergency notice."]

    report({"ok": True, "event": event, "mode": ext.control.read("mode", "normal")}, as_json, lines)


@emergency_group.command("deactivate-emergency")
@click.option("--resolved-by", help="Who resolved it (default: the OS user).")
@click.option("--force", is_flag=True, help="Leave emergency mode even while health checks fail.")
@click.option("--reason", help="Why (required with --force: why it is safe to leave).")
@json_option
@with_errors
def deactivate_emergency_command(resolved_by: str | None, force: bool, reason: str | None, as_json: bool) -> None:
    """Return every worker to real-time delivery; refused while health checks fail unless --force."""
    if force and not (reason and reason.strip()):
        usage('--force needs --reason: say why it is safe to leave emergency mode, e.g. '
              '--force --reason "socket queue restored, canary passes".')
    ext = ext_state()
    who = actor(resolved_by)
    result = deactivate(ext, resolved_by=who, force=force, reason=reason, source=SOURCE)
    notes = _after_deactivate_notes(ext)
    data = dict(result, ok=True, notes=notes)

    def lines() -> list[str]:
        event = result["event"]
        out = [f"Emergency mode off: delivery mode is '{result['mode']}'"
               + (f"; event #{event['id']} resolved by {event['resolved_by']}." if event else ".")]
        if force:
            failing = result.get("failing_checks")
            if failing:
                out.append(f"Forced past failing health checks ({', '.join(failing)}): {reason}")
            elif failing == []:
                out.append(f"Forced (checks were passing): {reason}")
            else:
                out.append(f"Forced (the health checks could not run): {reason}")
        out += [f"Note: {n}." for n in notes]
        return out

    report(data, as_json, lines)


@emergency_group.command("send-notification")
@click.option("--title", required=True, help="Notification title.")
@click.option("--message", required=True, help="Notification text.")
@click.option("--priority", type=click.Choice(PRIORITIES), default="high", show_default=True)
@click.option("--target", default="admins", show_default=True, help=f"Who gets it: {TARGET_HELP}.")
@json_option
@with_errors
def send_notification_command(title: str, message: str, priority: str, target: str, as_json: bool) -> None:
    """Send a notification to the admins, to every user (a banner), or to named users."""
    ext = ext_state()
    try:
        result = send_notice(ext, title=title, message=message, priority=priority, target=target,
                             actor=actor(), source=SOURCE)
    except NoticeError as exc:
        fail(str(exc), as_json=as_json)

    def lines() -> list[str]:
        if result["target"] == "all":
            return [f"Posted to every user: {result['detail']}."]
        return [f"Sent to {len(result['recipients'])} user(s):"] + [
            f"  user {r['user_id']}: notification #{r['notification_id']} {r['outcome']}"
            for r in result["recipients"]]

    report(result, as_json, lines)


@emergency_group.command("enable-fallback")
@click.option("--type", "kind", type=click.Choice(KINDS), required=True,
              help="flash: route all delivery to flash/polling; broadcast: post the emergency banner.")
@click.option("--message", help="Banner text for --type broadcast (default: a standard notice).")
@click.option("--title", help="Banner title for --type broadcast.")
@json_option
@with_errors
def enable_fallback_command(kind: str, message: str | None, title: str | None, as_json: bool) -> None:
    """Force flash/poll delivery in every worker, or post the emergency broadcast banner."""
    if message is not None and kind != "broadcast":
        usage("--message only applies to --type broadcast.", "--message")
    ext = ext_state()
    result = enable_fallback(ext, kind, actor(), SOURCE, message=message, title=title)
    report(result, as_json, [("Enabled" if result["changed"] else "Already enabled")
                             + f" ({kind}): {result['detail']}."])


@emergency_group.command("disable-fallback")
@click.option("--type", "kind", type=click.Choice(KINDS + ("all",)), default="all", show_default=True,
              help="Which fallback to turn off.")
@json_option
@with_errors
def disable_fallback_command(kind: str, as_json: bool) -> None:
    """Resume real-time delivery and/or dismiss the emergency banner."""
    ext = ext_state()
    kinds = KINDS if kind == "all" else (kind,)
    result = disable_fallback(ext, kinds, actor(), SOURCE)

    def lines() -> list[str]:
        out = [f"{k}: {v}." for k, v in result["done"].items()]
        if result.get("note"):
            out.append(f"Note: {result['note']}.")
        return out

    report(result, as_json, lines)


@emergency_group.command("test-fallback")
@click.option("--user", "user_id", help="Test user id (default: NOTIFY_EMERGENCY_TEST_USER_ID).")
@json_option
@with_errors
def test_fallback_command(user_id: str | None, as_json: bool) -> None:
    """Send a test notification through the fallback path and check it arrives exactly once."""
    ext = ext_state()
    uid = user_id or ext.app.config.get("NOTIFY_EMERGENCY_TEST_USER_ID")
    if not uid:
        usage("no test user: pass --user ID, or set NOTIFY_EMERGENCY_TEST_USER_ID to a user "
              "kept for tests.", "--user")
    try:
        result = run_fallback_test(ext, str(uid), actor(), SOURCE)
    except FallbackTestError as exc:
        fail(str(exc), as_json=as_json)

    def lines() -> list[str]:
        out = [f"Fallback test for user {result['user_id']} (mode {result['mode']}, page {result['page']}):"]
        out += [f"  {mark(s['ok'])} {s['step']:<20} {s['detail']}" for s in result["steps"]]
        out.append("PASS" if result["ok"] else "FAIL")
        return out

    report(result, as_json, lines)
    done(result["ok"])

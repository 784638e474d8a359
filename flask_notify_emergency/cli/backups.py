"""Backup commands: ``create-backup``, ``list-backups``, ``verify-backup``, ``restore-backup``.

Archives go to ``NOTIFY_EMERGENCY_BACKUP_DIR``; the database is read through the app's own
engine, so no password is ever put on a command line.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import click

from ..rollback import (
    BackupError,
    create_backup,
    list_backups,
    plan_lines,
    public_plan,
    restore_backup,
    restore_plan,
    verify_backup,
)
from . import emergency_group
from .output import EXIT_FAILED, SOURCE, actor, done, ext_state, fail, json_option, report

F = TypeVar("F", bound=Callable[..., Any])


def backup_errors(func: F) -> F:
    """A :class:`BackupError` ends the command with exit 1 and its message."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BackupError as exc:
            fail(str(exc), EXIT_FAILED, as_json=bool(kwargs.get("as_json")))
    return wrapper  # type: ignore[return-value]


@emergency_group.command("create-backup")
@click.option("--emergency", is_flag=True, help="Mark it as the emergency backup taken before a rollback.")
@click.option("--reason", help="Why it is taken (kept in the manifest).")
@json_option
@backup_errors
def create_backup_command(emergency: bool, reason: str | None, as_json: bool) -> None:
    """Write a checksummed archive of every table (config redacted) and verify it."""
    ext = ext_state()
    manifest = create_backup(ext, actor=actor(), source=SOURCE, emergency=emergency,
                             reason=reason or ("emergency backup before rollback" if emergency else None))
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    report(dict(manifest, ok=True), as_json, [f"Backup {manifest['id']} written and verified:",
                                              f"  {manifest['path']}", f"  rows: {counts}"])


@emergency_group.command("list-backups")
@json_option
@backup_errors
def list_backups_command(as_json: bool) -> None:
    """List the archives in the backup directory, newest first."""
    backups = list_backups(ext_state())

    def lines() -> list[str]:
        if not backups:
            return ["No backups yet: run 'flask emergency create-backup'."]
        out = []
        for b in backups:
            if "error" in b:
                out.append(f"{b['id']}  UNREADABLE: {b['error']}")
                continue
            check = b.get("verification") or {}
            verified = "verified" if check.get("ok") else ("FAILED verify" if check else "not verified")
            rows = sum((b.get("counts") or {}).values())
            out.append(f"{b['id']}  {b['created_at']}  {rows} rows  {verified}"
                       + ("  [emergency]" if b.get("emergency") else "")
                       + (f"  {b['reason']}" if b.get("reason") else ""))
        return out

    report({"ok": True, "backups": backups}, as_json, lines)


@emergency_group.command("verify-backup")
@click.argument("backup_id", required=False)
@click.option("--latest", is_flag=True, help="Verify the newest backup (the default without an ID).")
@json_option
@backup_errors
def verify_backup_command(backup_id: str | None, latest: bool, as_json: bool) -> None:
    """Check an archive: readable, every SHA-256 matches, every row parses. Exit 1 if bad."""
    if backup_id and latest:
        raise click.UsageError("give a backup ID or --latest, not both.")
    result = verify_backup(ext_state(), None if latest else backup_id)
    report(result, as_json, [f"{result['id']}: {'OK' if result['ok'] else 'BAD'}"]
           + [f"  - {p}" for p in result["problems"]])
    done(result["ok"])


@emergency_group.command("restore-backup")
@click.argument("backup_id")
@click.option("--confirm", is_flag=True, help="Apply the plan (needed when the store holds data).")
@click.option("--keep-switches", is_flag=True, help="Keep the current mode and other switches.")
@click.option("--other-app", is_flag=True,
              help="Restore an archive another app (or another database) made; refused without it.")
@json_option
@backup_errors
def restore_backup_command(backup_id: str, confirm: bool, keep_switches: bool, other_app: bool,
                           as_json: bool) -> None:
    """Upsert an archive's rows by primary key; rows only in the database are kept."""
    ext = ext_state()
    plan = restore_plan(ext, backup_id, keep_switches, other_app)
    if not plan["store_empty"] and not confirm:
        report(dict(public_plan(plan), ok=False, applied=False), as_json, plan_lines(plan))
        try:
            restore_backup(ext, backup_id, confirm=False, actor=actor(), source=SOURCE, keep_switches=keep_switches,
                           other_app=other_app)
        except BackupError as exc:  # the refusal, recorded in the audit log
            fail(str(exc))
    result = restore_backup(ext, backup_id, confirm=confirm, actor=actor(), source=SOURCE,
                            keep_switches=keep_switches, other_app=other_app)

    def lines() -> list[str]:
        out = plan_lines(result)
        if not result["changed"]:
            return out + ["Nothing to change: the store already holds this backup's content."]
        if result["safety_backup"]:
            out.append(f"Safety backup of the previous content: {result['safety_backup']}")
        return out + ["Restored."]

    report(dict(result, ok=True), as_json, lines)

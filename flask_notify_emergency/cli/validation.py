"""Post-rollback validation commands: ``test-pages``, ``check-database``,
``test-rollback --dry-run`` and ``generate-rollback-report``.
"""

from __future__ import annotations

from typing import Any

import click

from ..rollback import ReportError, check_database, generate_rollback_report, test_pages, test_rollback
from . import emergency_group
from .output import actor, done, ext_state, fail, json_option, mark, report


@emergency_group.command("test-pages")
@click.option("--page", "pages", multiple=True,
              help="A URL to fetch (repeatable; default: NOTIFY_EMERGENCY_TEST_PAGES).")
@click.option("--user", "user_id", help="Test user id (default: NOTIFY_EMERGENCY_TEST_USER_ID).")
@click.option("--admin", "admin_id", help="Admin id (default: the first of NOTIFY_EMERGENCY_ADMIN_USER_IDS).")
@json_option
def test_pages_command(pages: tuple[str, ...], user_id: str | None, admin_id: str | None, as_json: bool) -> None:
    """Fetch every test page as the test user and as an admin; exit 1 if any fails."""
    result = test_pages(ext_state(), pages=list(pages) or None, user_id=user_id, admin_id=admin_id)
    report(result, as_json, [f"Pages: {'PASS' if result['ok'] else 'FAIL'}"]
           + [f"  [FAIL] {p}" for p in result["problems"]]
           + [f"  [{mark(p['ok']).strip():>4}] {p['url']} as {p['role']} {p['user_id']}: {p['status']}"
              + (f" ({p['detail']})" if p["detail"] else "") for p in result["pages"]])
    done(result["ok"])


@emergency_group.command("check-database")
@json_option
def check_database_command(as_json: bool) -> None:
    """Schema present, row counts, orphans, backlog age; exit 1 if anything is broken."""
    result = check_database(ext_state())

    def lines() -> list[str]:
        out = [f"Database: {'PASS' if result['ok'] else 'FAIL'}"]
        for c in result["checks"]:
            tag = "warn" if c.get("warning") else mark(c["ok"]).strip()
            out.append(f"  [{tag:>4}] {c['name']}: {c['detail']}")
        out += [f"  {table}: {n} rows" for table, n in result["counts"].items()]
        return out

    report(result, as_json, lines)
    done(result["ok"])


@emergency_group.command("test-rollback")
@click.option("--dry-run", is_flag=True, help="Required: the rehearsal runs on a throwaway copy.")
@json_option
def test_rollback_command(dry_run: bool, as_json: bool) -> None:
    """Rehearse rollback, verification and restore on a throwaway copy of the data."""
    if not dry_run:
        raise click.UsageError("test-rollback only rehearses: add --dry-run (the real store is never touched; "
                               "to roll back for real use 'rollback --confirm').")
    result = test_rollback(ext_state(), actor=actor())

    def lines() -> list[str]:
        out = [f"Rollback rehearsal on a copy ({sum((result.get('copied') or {}).values())} rows copied): "
               f"{'PASS' if result['ok'] else 'FAIL'}; the real store was not changed."]
        if result.get("error"):
            out.append(f"  error: {result['error']}")
        out += [f"  {s['operation']:<8} {s['step']}: {s['detail']}" for s in result["steps"]]
        out += [f"  [{mark(c['ok']).strip():>4}] {c['name']}: {c['detail']}" for c in result["checks"]]
        return out

    report(result, as_json, lines)
    done(result["ok"])


@emergency_group.command("generate-rollback-report")
@click.argument("operation_id", required=False)
@click.option("--latest", is_flag=True, help="Report on the newest operation (the default without an ID).")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where to write (default: BACKUP_DIR/reports).")
@json_option
def generate_rollback_report_command(operation_id: str | None, latest: bool, output_dir: str | None,
                                     as_json: bool) -> None:
    """Write a Markdown and JSON report of one rollback/restore; print the paths."""
    if operation_id and latest:
        raise click.UsageError("give an OPERATION_ID or --latest, not both.")
    try:
        result = generate_rollback_report(ext_state(), None if latest else operation_id, out_dir=output_dir)
    except ReportError as exc:
        fail(str(exc), as_json=as_json)
    op: dict[str, Any] = result["report"]["operation"]
    report(dict(result, ok=True), as_json, [
        f"Report on {op['operation']} {op['operation_id']} ({op['status']}):",
        f"  {result['markdown']}", f"  {result['json']}"])

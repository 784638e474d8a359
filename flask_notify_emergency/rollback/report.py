"""``generate-rollback-report``: one operation's story, from the journal and the audit log.

Who started it and why, each step with its time and result, how long it took, the backlog
handed to the flash path, the verification results recorded by ``verify-rollback``, and
the audit entries around it. Written as Markdown and JSON next to each other in
``<NOTIFY_EMERGENCY_BACKUP_DIR>/reports`` (or ``--output-dir``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .journal import Journal

#: audit actions that belong to a rollback's story
ACTIONS = ("create-backup", "document-state", "notify-rollback-start", "request-rollback", "approve-rollback",
           "rollback", "verify-rollback", "restore", "restore-backup", "test-rollback")
MARGIN = dt.timedelta(hours=1)


class ReportError(Exception):
    """No operation to report on; the message says what exists."""


def reports_dir(ext: Any, out_dir: str | None = None) -> Path:
    path = Path(out_dir) if out_dir else Path(ext.app.config["NOTIFY_EMERGENCY_BACKUP_DIR"]) / "reports"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_pair(directory: Path, stem: str, markdown: str, data: dict[str, Any]) -> dict[str, str]:
    """Write ``<stem>.md`` and ``<stem>.json``; return both paths."""
    md, js = directory / f"{stem}.md", directory / f"{stem}.json"
    md.write_text(markdown, encoding="utf-8")
    js.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    for path in (md, js):
        os.chmod(path, 0o600)
    return {"markdown": str(md), "json": str(js)}


def _parse(stamp: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(stamp.rstrip("Z")) if stamp else None


def audit_entries(ext: Any, op: dict[str, Any]) -> list[dict[str, Any]]:
    """Audit rows of the operation: its own, and related actions from an hour before to its end."""
    t = ext.models.AuditEntry.__table__
    start = _parse(op["started_at"])
    assert start is not None
    end = _parse(op["ended_at"])
    q = sa.select(t).where(t.c.action.in_(ACTIONS), t.c.at >= start - MARGIN).order_by(t.c.id)
    with ext.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q.limit(500))]
    out = []
    for r in rows:
        args = r["arguments"] or {}
        related = args.get("operation_id") == op["operation_id"] or (
            args.get("operation_id") is None and (end is None or r["at"] <= end + dt.timedelta(seconds=5)))
        if related:
            out.append({"at": r["at"].isoformat() + "Z", "actor": r["actor"], "action": r["action"],
                        "source": r["source"], "outcome": r["outcome"], "detail": r["detail"],
                        "arguments": args})
    return out


def build_report(ext: Any, operation_id: str | None = None) -> dict[str, Any]:
    journal = Journal(ext.engine, ext.models)
    op = journal.summary(operation_id) if operation_id else journal.latest()
    if op is None:
        raise ReportError(f"no rollback operation {operation_id!r} in the journal." if operation_id
                          else "the journal is empty: no rollback or restore has run yet.")
    audit = audit_entries(ext, op)
    verifications = [a for a in audit if a["action"] == "verify-rollback"
                     and a["arguments"].get("operation_id") == op["operation_id"]]
    steps = {s["step"]: s for s in op["steps"]}
    backlog = (steps.get("hand-backlog") or {}).get("detail")
    return {
        "operation": op, "who": op["actor"], "why": op["reason"], "status": op["status"],
        "duration_seconds": op["duration_seconds"], "backlog_handed": backlog,
        "verification": verifications[-1]["arguments"] if verifications else None,
        "audit": audit,
        "timeline": sorted(
            [dict(e, kind="journal") for e in op["timeline"]]
            + [{"at": a["at"], "kind": "audit", "step": a["action"], "status": a["outcome"], "actor": a["actor"],
                "detail": a["detail"]} for a in audit], key=lambda e: e["at"] or ""),
    }


def _markdown(report: dict[str, Any]) -> str:
    op = report["operation"]
    lines = [f"# {op['operation'].capitalize()} report: {op['operation_id']}", "",
             f"- Status: **{op['status']}**", f"- Who: {op['actor']} (from {op['source'] or '?'})",
             f"- Why: {op['reason'] or '-'}",
             f"- Planned: {'yes, request ' + str(op['request_id']) if op['planned'] else 'no (emergency)'}",
             f"- Started: {op['started_at']}", f"- Ended: {op['ended_at'] or 'not yet'}",
             f"- Duration: {op['duration_seconds']:.1f}s" if op["duration_seconds"] is not None else "- Duration: -"]
    backlog = report["backlog_handed"]
    if backlog:
        lines.append(f"- Backlog handed to flash delivery: {backlog.get('undelivered')} notifications for "
                     f"{backlog.get('users')} users")
    lines += ["", "## Steps", "", "| step | status | detail |", "|---|---|---|"]
    for s in op["steps"]:
        detail = json.dumps(s.get("detail"), default=str) if s.get("detail") is not None else ""
        lines.append(f"| {s['step']} | {s['status']} | {detail.replace('|', '/')} |")
    lines += ["", "## Verification", ""]
    verification = report["verification"]
    if verification:
        lines.append(f"Result: **{'pass' if verification.get('ok') else 'FAIL'}**")
        for c in verification.get("checks", []):
            lines.append(f"- {'ok' if c['ok'] else 'FAIL'} {c['name']}: {c.get('detail') or ''}")
    else:
        lines.append("Not verified yet: run `flask emergency verify-rollback`.")
    lines += ["", "## Timeline", ""]
    for e in report["timeline"]:
        lines.append(f"- {e['at']} [{e['kind']}] {e['step']} {e['status']} ({e.get('actor') or '-'})")
    return "\n".join(lines) + "\n"


def generate_rollback_report(ext: Any, operation_id: str | None = None, *,
                             out_dir: str | None = None) -> dict[str, Any]:
    """Write the report of one operation (the latest when None); return paths and content."""
    report = build_report(ext, operation_id)
    stem = f"rollback-report-{report['operation']['operation_id']}"
    paths = write_pair(reports_dir(ext, out_dir), stem, _markdown(report), report)
    return dict(paths, report=report)

"""Rollback to flash-only delivery and restore: the journaled, idempotent steps
(:mod:`.execute`, :mod:`.steps`, :mod:`.journal`), the two-person rule, verification and the
report, the pre-rollback checklist, the rehearsal on a copy, backups and their restore, and the
post-rollback validation (test pages, database checks).

Uses :mod:`..communicate` (alerts at rollback start), :mod:`..respond` (events, worker
reports), :mod:`..detect` (health), :mod:`..delivery` (the store) and the shared top-level
modules. Nothing here depends on the dashboard or the CLI.
"""

from __future__ import annotations

from . import execute
from .approval import list_requests
from .backup_restore import plan_lines, public_plan, restore_backup, restore_plan
from .backups import BackupError, create_backup, list_backups, verify_backup
from .checklist import document_state, notify_rollback_start, verify_rollback_ready
from .execute import (
    RollbackError,
    approve_rollback,
    request_rollback,
    restore,
    rollback,
    rollback_status,
    rollback_success_rate,
)
from .rehearsal import copy_tables, test_rollback
from .report import ReportError, generate_rollback_report
from .validation import admin_user_ids, check_database, database_reachable, fetch_page, login_client, test_pages
from .verify import verify_rollback

__all__ = [
    "admin_user_ids", "approve_rollback", "BackupError", "check_database", "copy_tables",
    "create_backup", "database_reachable", "document_state", "execute", "fetch_page",
    "generate_rollback_report", "list_backups", "list_requests", "login_client",
    "notify_rollback_start", "plan_lines", "public_plan", "ReportError", "request_rollback",
    "restore", "restore_backup", "restore_plan", "rollback", "rollback_status",
    "rollback_success_rate", "RollbackError", "test_pages", "test_rollback", "verify_backup",
    "verify_rollback", "verify_rollback_ready",
]

"""``docs/runbook.md`` cannot rot: every command of its ``bash`` blocks is run, in order, as an
operator would type it, against the example app with a real Redis and a real PostgreSQL
database. A step that exits otherwise than the runbook says fails the test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.apps import EXAMPLES, ROOT, build_example, drop_tables
from tests.support.databases import own_database
from tests.support.receivers import HttpSink

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

RUNBOOK = os.path.join(ROOT, "docs", "runbook.md")
RUNNABLE = re.compile(r"^(flask emergency |bash scripts/|python scripts/)")
EXPECTED = re.compile(r"#\s*exit\s+([\d ,or]+)\s*$")


def runbook_steps() -> list[tuple[str, set[int]]]:
    """(command, the exit codes the runbook allows) of every runnable line, in order."""
    with open(RUNBOOK, encoding="utf-8") as fh:
        text = fh.read()
    steps = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not RUNNABLE.match(line):
                continue
            expected = EXPECTED.search(line)
            codes = {int(c) for c in re.findall(r"\d+", expected.group(1))} if expected else {0}
            steps.append((line, codes))
    return steps


def test_the_runbook_has_a_step_for_every_section_of_the_procedures():
    steps = [command for command, _ in runbook_steps()]
    assert len(steps) > 40
    for needed in ("status", "activate-emergency", "enable-fallback --type flash", "auto-recover",
                   "restart-websockets", "create-backup --emergency", "bash scripts/rollback_notification_system.sh",
                   "verify-rollback", "create-incident", "update-status-page", "configure-alerts", "test-alerts",
                   "validate-recovery", "document-incident", "execute-drill", "evaluate-drill", "generate-metrics"):
        assert any(needed in step for step in steps), needed


def latest_id(engine: sa.engine.Engine, table: str) -> str:
    with engine.connect() as conn:
        value = conn.execute(sa.text(f"SELECT max(id) FROM {table}")).scalar()
    assert value is not None, f"no row in {table} yet: the runbook uses one before it makes one"
    return str(value)


def test_every_runbook_command_works_against_the_example_app(tmp_path, redis_url, redis_prefix):
    sink = HttpSink()
    with own_database("postgres") as url:
        config: dict[str, Any] = {"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_REDIS_URL": redis_url,
                                  "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
                                  "NOTIFY_EMERGENCY_BACKUP_DIR": str(tmp_path / "backups"),
                                  "NOTIFY_EMERGENCY_LOG_FILE": str(tmp_path / "commands.log")}
        app, _ = build_example(config)  # the tables and the demo users
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                bob = conn.execute(sa.text("SELECT id FROM demo_user WHERE username = 'bob'")).scalar()
            config["NOTIFY_EMERGENCY_TEST_USER_ID"] = str(bob)
            env = dict(os.environ, FLASK_APP="tests.support.flask_app:create", SERVE_CONFIG=json.dumps(config),
                       PYTHONPATH=os.pathsep.join([ROOT, EXAMPLES]), TMPDIR=str(tmp_path),
                       PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
                       NOTIFY_EMERGENCY_ROLLBACK_LOG=str(tmp_path / "notification_rollback.log"))
            broken: list[str] = []
            for command, codes in runbook_steps():
                if "<EVENT_ID>" in command:
                    command = command.replace("<EVENT_ID>", latest_id(engine, "notify_emergency_event"))
                if "<DRILL_ID>" in command:
                    command = command.replace("<DRILL_ID>", latest_id(engine, "notify_emergency_drill"))
                command = command.replace("<WEBHOOK_URL>", sink.url + "/alerts")
                assert "<" not in command.split("#")[0], f"unknown placeholder in: {command}"
                result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                                        text=True, timeout=300)
                output = result.stdout + result.stderr
                if result.returncode not in codes or "Traceback" in output:
                    broken.append(f"$ {command}\n(exit {result.returncode}, the runbook allows "
                                  f"{sorted(codes)})\n{output[-1500:]}")
            assert not broken, "\n\n".join(broken)
            # the steps really acted: the alert reached the webhook, the rollback was undone
            assert sink.received("/alerts")
        finally:
            engine.dispose()
            drop_tables(app)
            sink.stop()

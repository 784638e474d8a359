"""``scripts/rollback_notification_system.sh``: the runbook's rollback, end to end, as the operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import user_id
from tests.support.cli import audit_rows
from tests.support.rollback import ROOT, cli_env

SCRIPT = os.path.join(ROOT, "scripts", "rollback_notification_system.sh")


def _run(tmp_path: Path, config: dict[str, Any], *args: str, log: str | None = None) -> subprocess.CompletedProcess[str]:
    env = cli_env(config)
    env.update({"FLASK": os.path.join(os.path.dirname(sys.executable), "flask"),
                "FLASK_APP": "tests.support.rollback:cli_app", "TMPDIR": str(tmp_path),
                "NOTIFY_EMERGENCY_ROLLBACK_LOG": log or str(tmp_path / "rollback.log")})
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_script_rolls_back_verifies_and_reports(make_app, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.sqlite'}"
    backups = tmp_path / "backups"
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=uri)
    config = {"SQLALCHEMY_DATABASE_URI": uri, "NOTIFY_EMERGENCY_BACKUP_DIR": str(backups),
              "NOTIFY_EMERGENCY_TEST_USER_ID": user_id(app, "bob")}
    ext = app.extensions["notify_emergency"]

    assert _run(tmp_path, config, "--planned", "--request", "r1").returncode == 2  # planned: needs a reason
    dry = _run(tmp_path, config, "--reason", "socket queue lost", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Dry run: nothing changed" in dry.stdout and "Rollback rehearsal on a copy" in dry.stdout
    assert ext.control.read("mode") is None and not backups.exists()

    done = _run(tmp_path, config, "--reason", "socket queue lost")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Rollback complete and verified" in done.stdout
    assert ext.control.read("mode") == "legacy"
    assert len(list(backups.glob("*-emergency.tar.gz"))) == 1
    assert len(list((backups / "reports").glob("rollback-report-rb-*.md"))) == 1
    log = (tmp_path / "rollback.log").read_text()
    for command in ("create-backup --emergency", "document-state", "notify-rollback-start",
                    "verify-rollback-ready", "rollback --reason socket queue lost --confirm", "verify-rollback",
                    "generate-rollback-report --latest"):
        assert f"$ flask emergency {command}" in log


def test_without_arguments_it_is_an_emergency_rollback_and_an_unwritable_log_falls_back(make_app, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.sqlite'}"
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=uri)
    config = {"SQLALCHEMY_DATABASE_URI": uri, "NOTIFY_EMERGENCY_BACKUP_DIR": str(tmp_path / "backups"),
              "NOTIFY_EMERGENCY_TEST_USER_ID": user_id(app, "bob")}
    ext = app.extensions["notify_emergency"]

    # the runbook's literal line, with a log nobody can write (a path under a file)
    done = _run(tmp_path, config, log="/dev/null/notification_rollback.log")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No --reason given: emergency rollback" in done.stdout
    fallback = tmp_path / "notification_rollback.log"
    assert f"cannot write the log /dev/null/notification_rollback.log; logging to {fallback}" in done.stderr
    assert "$ flask emergency rollback --reason Emergency rollback from the command line --confirm" \
        in fallback.read_text()
    assert ext.control.read("mode") == "legacy"
    rollback = [r for r in audit_rows(app, "rollback") if r["outcome"] != "refused"]
    assert rollback and rollback[-1]["arguments"]["reason"] == "Emergency rollback from the command line"


def test_rollback_script_writes_out_the_shipped_script(example, tmp_path):
    from tests.support.cli import invoke, invoke_json

    app, _ = example
    code, where = invoke_json(app, "rollback-script")
    assert code == 0 and Path(where["path"]).read_bytes() == Path(SCRIPT).read_bytes()
    target = tmp_path / "rollback.sh"
    code, written = invoke_json(app, "rollback-script", "--output", str(target))
    assert code == 0 and written["path"] == str(target)
    assert os.access(target, os.X_OK) and target.read_bytes() == Path(SCRIPT).read_bytes()
    target.write_text("edited by the operator")
    refused = invoke(app, "rollback-script", "--output", str(target))
    assert refused.exit_code == 1 and "--force" in refused.output
    assert target.read_text() == "edited by the operator"
    assert invoke(app, "rollback-script", "--output", str(target), "--force").exit_code == 0
    assert target.read_bytes() == Path(SCRIPT).read_bytes()

"""The checklist around a rollback: readiness, state, pages, database, rehearsal, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask_notify_emergency.rollback.execute import rollback_status
from tests.conftest import user_id
from tests.support.rollback import cli, snapshot


def _ext(app: Any) -> Any:
    return app.extensions["notify_emergency"]


def _send(app: Any, name: str, title: str) -> int:
    with app.app_context():
        return int(app.extensions["demo"]["notify"].send(user_id(app, name), title, "waiting"))


def test_pre_rollback_checklist(make_app, tmp_path):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    _send(app, "alice", "Before the rollback")
    not_ready = cli(app, "verify-rollback-ready")
    assert not_ready.exit_code == 1
    assert "[FAIL] backup: there is no backup" in not_ready.output
    assert "[  ok] database" in not_ready.output

    assert cli(app, "create-backup", "--emergency").exit_code == 0
    ready = cli(app, "verify-rollback-ready", "--json")
    assert ready.exit_code == 0, ready.output
    assert {c["name"]: c["ok"] for c in json.loads(ready.output)["checks"]}["no-rollback-in-progress"]

    documented = cli(app, "document-state", "--json")
    assert documented.exit_code == 0
    paths = json.loads(documented.output)
    state = json.loads(Path(paths["json"]).read_text())
    assert state["mode"] == "normal" and state["backlog"]["undelivered"] == 1
    assert "Delivery mode: **normal**" in Path(paths["markdown"]).read_text()

    told = cli(app, "notify-rollback-start", "--reason", "queue down")
    assert told.exit_code == 0 and "[  ok] in-app: 1 of 1 admins" in told.output
    admin_rows = [r for r in snapshot(app)["notify_emergency_notification"].values()
                  if r["user_id"] == user_id(app, "admin")]
    assert [r["title"] for r in admin_rows] == ["Notification rollback starting"]
    assert "queue down" in admin_rows[0]["message"]

    status = rollback_status(_ext(app))
    assert [c["ok"] for c in status["checklist"]] == [True, True, True]
    assert status["latest_backup"]["verified"] is True and status["latest_backup"]["emergency"] is True


def test_pages_are_fetched_as_the_test_user_and_as_an_admin(make_app):
    app, _ = make_app()

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("broken page")

    alice = user_id(app, "alice")
    waiting = _send(app, "alice", "Not for the page test")
    good = cli(app, "test-pages", "--user", alice)
    assert good.exit_code == 0, good.output
    assert f"/ as user {alice}: 200" in good.output and "/ as admin 1: 200" in good.output
    assert not _ext(app).store.get(waiting)["delivered"]  # looking at a page takes nothing from alice

    bad = cli(app, "test-pages", "--user", alice, "--page", "/", "--page", "/emergency/", "--page", "/boom", "--json")
    assert bad.exit_code == 1
    results = {(p["url"], p["role"]): p for p in json.loads(bad.output)["pages"]}
    assert results[("/", "user")]["ok"] and results[("/emergency/", "admin")]["ok"]
    assert results[("/emergency/", "user")]["status"] == 403
    assert not results[("/boom", "user")]["ok"]
    assert "RuntimeError: broken page" in results[("/boom", "user")]["detail"]  # TESTING propagates it

    stranger = cli(app, "test-pages", "--user", "999", "--json")
    assert stranger.exit_code == 1
    assert "login page" in json.loads(stranger.output)["pages"][0]["detail"]


def test_check_database_finds_orphans(make_app):
    app, _ = make_app()
    ok = cli(app, "check-database")
    assert ok.exit_code == 0 and "every table and column present" in ok.output
    _ext(app).audit.record("ops", "acknowledge-event", "cli", event_id=999)
    broken = cli(app, "check-database", "--json")
    assert broken.exit_code == 1
    checks = {c["name"]: c for c in json.loads(broken.output)["checks"]}
    assert not checks["audit-events"]["ok"]
    assert "1 audit rows point to missing events" in checks["audit-events"]["detail"]


def test_verify_rollback_sends_a_flash_to_the_test_user(make_app):
    app, _ = make_app()
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    too_early = cli(app, "verify-rollback", "--user", bob)
    assert too_early.exit_code == 1 and "expected 'legacy' and paused" in too_early.output

    _send(app, "alice", "Waiting for alice")
    assert cli(app, "rollback", "--reason", "drill", "--confirm").exit_code == 0
    verified = cli(app, "verify-rollback", "--user", bob, "--json")
    assert verified.exit_code == 0, verified.output
    checks = {c["name"]: c for c in json.loads(verified.output)["checks"]}
    assert checks["flash-delivery"]["shown_in_page"] and "delivered by flash" in checks["flash-delivery"]["detail"]
    row = _ext(app).store.get(checks["flash-delivery"]["notification_id"])
    assert row["delivered"] and row["channel"] == "flash" and row["user_id"] == bob

    # a user with notifications of their own is not used: a test request would take them
    busy = cli(app, "verify-rollback", "--user", alice, "--json")
    assert busy.exit_code == 1
    detail = {c["name"]: c for c in json.loads(busy.output)["checks"]}["flash-delivery"]["detail"]
    assert "1 undelivered notifications" in detail
    assert not _ext(app).store.get(1)["delivered"]


def test_rehearsal_runs_everything_on_a_copy_and_changes_nothing(make_app):
    app, _ = make_app()
    for n in range(4):
        _send(app, "alice", f"Rehearsed {n}")
    before = snapshot(app)
    refused = cli(app, "test-rollback")
    assert refused.exit_code == 2 and "--dry-run" in refused.output
    rehearsed = cli(app, "test-rollback", "--dry-run", "--json")
    assert rehearsed.exit_code == 0, rehearsed.output
    report = json.loads(rehearsed.output)
    assert report["ok"] and report["copied"]["notify_emergency_notification"] == 4
    assert [s["step"] for s in report["steps"]] == ["pause-realtime", "switch-mode", "hand-backlog", "post-banner",
                                                    "resume-realtime", "switch-mode", "dismiss-banner"]
    assert all(c["ok"] for c in report["checks"])
    assert snapshot(app) == before
    assert _ext(app).control.mode == "normal"


def test_rollback_report_tells_who_why_and_what(make_app, tmp_path):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"),
                      NOTIFY_EMERGENCY_TEST_USER_ID="3")
    assert cli(app, "generate-rollback-report", "--latest").exit_code == 1
    _send(app, "alice", "Waiting")
    assert cli(app, "rollback", "--reason", "socket queue lost", "--confirm").exit_code == 0
    assert cli(app, "verify-rollback").exit_code == 0

    made = cli(app, "generate-rollback-report", "--latest", "--json")
    assert made.exit_code == 0, made.output
    paths = json.loads(made.output)
    report = json.loads(Path(paths["json"]).read_text())
    assert report["why"] == "socket queue lost" and report["status"] == "done"
    assert report["who"] == report["operation"]["actor"] and report["duration_seconds"] >= 0
    assert report["backlog_handed"]["undelivered"] == 1
    assert report["verification"]["ok"] is True
    text = Path(paths["markdown"]).read_text()
    assert "Why: socket queue lost" in text and "Result: **pass**" in text and "| post-banner | done |" in text
    op_id = report["operation"]["operation_id"]
    assert cli(app, "generate-rollback-report", op_id).exit_code == 0
    assert cli(app, "generate-rollback-report", "rb-unknown").exit_code == 1

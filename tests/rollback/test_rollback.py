"""Rollback and restore: the steps, refusals, the two-person rule, crash and resume."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from flask_notify_emergency.cli.rollback import DEFAULT_EMERGENCY_REASON, HOLD_AFTER_ENV, HOLD_FILE_ENV
from flask_notify_emergency.models import utcnow
from flask_notify_emergency.rollback import execute as rb
from tests.conftest import login, user_id
from tests.support.rollback import ROOT, cli, cli_env, snapshot
from tests.support.services import wait_until

AUDIT = "notify_emergency_audit"


def _ext(app: Any) -> Any:
    return app.extensions["notify_emergency"]


def _backlog(app: Any, overdue: int = 2) -> None:
    """Undelivered rows for alice and bob; some still waiting on a real-time deadline that passed."""
    notify = app.extensions["demo"]["notify"]
    with app.app_context():
        ids = [notify.send(user_id(app, name), f"{name} {n}", "waiting") for name in ("alice", "bob") for n in range(3)]
    t = _ext(app).models.Notification.__table__
    with _ext(app).engine.begin() as conn:
        conn.execute(t.update().where(t.c.id.in_(ids[:overdue]))
                     .values(realtime_deadline=utcnow() - dt.timedelta(seconds=1)))


def _end_state(app: Any) -> dict[str, Any]:
    ext = _ext(app)
    status = rb.rollback_status(ext)
    last = status["last_operation"]
    t = ext.models.Notification.__table__
    with ext.engine.connect() as conn:
        waiting_on_realtime = conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.delivered.is_(False), t.c.realtime_deadline.is_not(None))).scalar()
    backlog = next(s["detail"] for s in last["steps"] if s["step"] == "hand-backlog")
    return {"mode": status["mode"], "paused": status["paused"], "final": last["status"],
            "done_steps": sorted(last["done_steps"]), "banners": [b["kind"] for b in ext.store.active_banners()],
            "backlog": {k: backlog[k] for k in ("undelivered", "users")}, "waiting_on_realtime": waiting_on_realtime,
            "in_progress": status["in_progress"], "lock": status["lock_holder"]}


def test_rollback_then_restore_in_process(make_app):
    app, _ = make_app()
    _backlog(app)
    ext = _ext(app)
    dry = cli(app, "rollback", "--reason", "queue down", "--dry-run")
    assert dry.exit_code == 0 and "nothing changed" in dry.output and "4. post-banner" in dry.output
    assert ext.control.read("mode") is None and not ext.store.active_banners()

    done = cli(app, "rollback", "--reason", "queue down", "--confirm", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["status"] == "done"
    state = _end_state(app)
    assert state["mode"] == "legacy" and state["paused"] == {"realtime": True}
    assert state["backlog"] == {"undelivered": 6, "users": 2} and state["waiting_on_realtime"] == 0
    assert state["banners"] == ["rollback"] and state["final"] == "done"

    # users get the backlog as flashes on their next page view, exactly once
    client = app.test_client()
    login(client, "bob")
    pages = [client.get("/").get_data(as_text=True) for _ in range(3)]
    assert sum(p.count("bob ") for p in pages) == 3
    assert "Live notifications are paused" in pages[0]

    again = cli(app, "rollback", "--reason", "queue down", "--confirm")
    assert again.exit_code == 0 and "Already rolled back" in again.output

    restored = cli(app, "restore", "--confirm")
    assert restored.exit_code == 0, restored.output
    assert ext.control.read("mode") == "normal" and ext.control.read("paused") == {"realtime": False}
    assert not ext.store.active_banners()
    assert rb.rollback_success_rate(ext, None) == 1.0
    assert cli(app, "restore", "--confirm").output.startswith("Nothing to restore")


def _state_without_audit(app: Any) -> dict[str, Any]:
    return {k: v for k, v in snapshot(app).items() if k != AUDIT}


def test_refusals_change_nothing_and_are_audited(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_PLANNED_ROLLBACK_APPROVALS=1)
    _backlog(app)
    ext = _ext(app)
    before = _state_without_audit(app)
    audited = len(snapshot(app)[AUDIT])

    with pytest.raises(rb.RollbackError, match="not an administrator"):
        rb.rollback(ext, reason="x", actor="alice (id 2)", source="web", confirm=True, admin=False)
    with pytest.raises(rb.RollbackError, match="not an administrator"):
        rb.restore(ext, actor="alice (id 2)", source="web", confirm=True, admin=False)
    with pytest.raises(rb.RollbackError, match="not an administrator"):
        rb.request_rollback(ext, reason="x", requested_by="alice", source="web", admin=False)
    missing = cli(app, "rollback", "--reason", "queue down")
    assert missing.exit_code == 1 and "--confirm" in missing.output
    planned_no_reason = cli(app, "rollback", "--planned", "--confirm")
    assert planned_no_reason.exit_code == 2
    assert "a planned rollback needs a reason" in planned_no_reason.output
    unapproved = cli(app, "rollback", "--planned", "--reason", "upgrade", "--confirm")
    assert unapproved.exit_code == 1 and "approved request" in unapproved.output
    for refusal in (missing, planned_no_reason, unapproved):  # nothing says it started
        assert "Rolling back" not in refusal.output

    assert _state_without_audit(app) == before
    refused = [r for r in snapshot(app)[AUDIT].values() if r["id"] > audited]
    assert [r["outcome"] for r in refused] == ["refused"] * 6
    assert {r["action"] for r in refused} == {"rollback", "restore", "request-rollback"}


def test_an_emergency_rollback_without_a_reason_records_the_default_one(make_app):
    app, _ = make_app()
    _backlog(app)
    ext = _ext(app)
    done = cli(app, "rollback", "--confirm")
    assert done.exit_code == 0, done.output
    note = f'No --reason given: recording "{DEFAULT_EMERGENCY_REASON}".'
    assert done.output.index(note) < done.output.index("Rolling back to flash-only delivery:")
    assert f"Reason recorded: {DEFAULT_EMERGENCY_REASON}" in done.output
    assert ext.control.read("mode") == "legacy"
    last = rb.rollback_status(ext)["last_operation"]
    assert (last["reason"], last["planned"], last["status"]) == (DEFAULT_EMERGENCY_REASON, False, "done")
    [entry] = [r for r in snapshot(app)[AUDIT].values() if r["action"] == "rollback"]
    assert entry["outcome"] == "ok"
    assert json.loads(entry["arguments"])["reason"] == DEFAULT_EMERGENCY_REASON


def test_the_runbook_line_rollback_confirm_runs_as_written(make_app, tmp_path):
    uri = f"sqlite:///{tmp_path / 'runbook.sqlite'}"
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=uri)
    env = cli_env({"SQLALCHEMY_DATABASE_URI": uri})
    env["FLASK_APP"] = "tests.support.rollback:cli_app"
    run = subprocess.run([sys.executable, "scripts/notification_emergency_cli.py", "rollback", "--confirm"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert DEFAULT_EMERGENCY_REASON in run.stdout
    assert rb.rollback_status(_ext(app))["last_operation"]["reason"] == DEFAULT_EMERGENCY_REASON


def test_planned_rollback_needs_a_second_admin(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_PLANNED_ROLLBACK_APPROVALS=1)
    ext = _ext(app)
    opened = cli(app, "request-rollback", "--planned", "--reason", "upgrade night", "--requested-by", "ann", "--json")
    assert opened.exit_code == 0, opened.output
    request_id = json.loads(opened.output)["id"]
    before = _state_without_audit(app)

    pending = cli(app, "rollback", "--planned", "--request", request_id, "--reason", "upgrade", "--confirm")
    assert pending.exit_code == 1 and "0 of 1 approvals" in pending.output
    self_approval = cli(app, "approve-rollback", request_id, "--approved-by", "ANN")
    assert self_approval.exit_code == 1 and "cannot approve it" in self_approval.output
    assert _state_without_audit(app) == before

    approved = cli(app, "approve-rollback", request_id, "--approved-by", "bea")
    assert approved.exit_code == 0 and "approved" in approved.output
    done = cli(app, "rollback", "--planned", "--request", request_id, "--reason", "upgrade", "--confirm")
    assert done.exit_code == 0, done.output
    assert ext.control.read("mode") == "legacy"
    last = rb.rollback_status(ext)["last_operation"]
    assert last["planned"] and last["request_id"] == request_id
    assert cli(app, "restore", "--confirm").exit_code == 0
    reused = cli(app, "rollback", "--planned", "--request", request_id, "--reason", "again", "--confirm")
    assert reused.exit_code == 1 and "already used" in reused.output

    actions = [(r["action"], r["outcome"], r["actor"]) for r in snapshot(app)[AUDIT].values()]
    assert ("request-rollback", "ok", "ann") in actions
    assert ("approve-rollback", "refused", "ANN") in actions and ("approve-rollback", "ok", "bea") in actions


def _killed_rollback(config: dict[str, Any], step: str, tmp_path: Any) -> None:
    """Run the CLI rollback in a process of its own and SIGKILL it right after ``step``."""
    hold = str(tmp_path / f"hold-{step}")
    env = cli_env(config)
    env.update({HOLD_AFTER_ENV: step, HOLD_FILE_ENV: hold})
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "tests.support.rollback:cli_app", "emergency",
                             "rollback", "--reason", "kill drill", "--confirm"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: os.path.exists(hold + ".reached") or proc.poll() is not None, timeout=60,
                   message=f"the rollback to reach {step}")
        assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("step", ["pause-realtime", "hand-backlog"])
def test_a_rollback_killed_between_steps_ends_like_an_uninterrupted_one(step, make_app, tmp_path):
    uri = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    killed, _ = make_app(SQLALCHEMY_DATABASE_URI=uri)
    calm, _ = make_app()
    for app in (killed, calm):
        _backlog(app)

    _killed_rollback({"SQLALCHEMY_DATABASE_URI": uri}, step, tmp_path)
    interrupted = rb.rollback_status(_ext(killed))
    assert interrupted["in_progress"]["status"] == "in-progress" and interrupted["lock_holder"] is None
    assert step in interrupted["in_progress"]["done_steps"]
    assert len(interrupted["in_progress"]["done_steps"]) < 4

    resumed = cli(killed, "rollback", "--reason", "kill drill", "--confirm", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.output)["resumed"] is True
    assert cli(calm, "rollback", "--reason", "kill drill", "--confirm").exit_code == 0

    assert _end_state(killed) == _end_state(calm)
    assert _end_state(killed)["done_steps"] == ["hand-backlog", "pause-realtime", "post-banner", "switch-mode"]


def test_restore_after_a_killed_rollback_reverts_it(make_app, tmp_path):
    uri = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=uri)
    _backlog(app)
    _killed_rollback({"SQLALCHEMY_DATABASE_URI": uri}, "switch-mode", tmp_path)
    ext = _ext(app)
    assert ext.control.read("mode") == "legacy"
    killed_op = rb.rollback_status(ext)["in_progress"]["operation_id"]

    restored = cli(app, "restore", "--confirm")
    assert restored.exit_code == 0, restored.output
    assert ext.control.read("mode") == "normal" and ext.control.read("paused") == {"realtime": False}
    summary = rb.Journal(ext.engine, ext.models).summary(killed_op)
    assert summary["status"] == "failed" and summary["result"]["interrupted"]
    assert {s["step"]: s["status"] for s in summary["steps"]} == {"pause-realtime": "reverted",
                                                                   "switch-mode": "reverted"}
    assert rb.rollback_success_rate(ext, None) == 0.5
    assert rb.rollback_success_rate(ext, None, ("restore",)) == 1.0


def test_automatic_rollback_only_when_enabled_and_recovery_failed(make_app):
    from flask_notify_emergency.respond.emergency import activate, record_action

    off, _ = make_app()
    on, _ = make_app(NOTIFY_EMERGENCY_AUTO_ROLLBACK=True, NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS=2)
    events = {}

    def failed_attempt(app: Any) -> None:  # what recovery.run_plan records: each step, then the attempt
        for action in ("restart_websockets", "half_open_breaker", "recovery-attempt"):
            record_action(_ext(app), events[app], action, "failed", "still failing", "monitor")

    for app in (off, on):
        events[app] = activate(_ext(app), reason="queue down", triggered_by="monitor", level=2)["id"]
        failed_attempt(app)
    assert rb.maybe_auto_rollback(_ext(on)) is None  # one failed attempt of two allowed
    for app in (off, on):
        failed_attempt(app)

    assert rb.maybe_auto_rollback(_ext(off)) is None
    assert _ext(off).control.read("mode") == "emergency"
    result = rb.maybe_auto_rollback(_ext(on))
    assert result is not None and result["status"] == "done" and "recovery failed 2 times" in result["why"]
    assert _ext(on).control.read("mode") == "legacy"
    assert rb.maybe_auto_rollback(_ext(on)) is None  # already rolled back


def test_automatic_rollback_after_a_long_critical_emergency(make_app):
    from flask_notify_emergency.respond.emergency import open_event

    app, _ = make_app(NOTIFY_EMERGENCY_AUTO_ROLLBACK=True, NOTIFY_EMERGENCY_AUTO_ROLLBACK_AFTER=60)
    ext = _ext(app)
    open_event(ext, level=2, failure_type="manual", reason="old, not critical", triggered_by="ops",
               started_at=utcnow() - dt.timedelta(hours=2))
    assert rb.maybe_auto_rollback(ext) is None
    open_event(ext, level=1, failure_type="manual", reason="everything down", triggered_by="ops",
               started_at=utcnow() - dt.timedelta(seconds=61))
    result = rb.maybe_auto_rollback(ext)
    assert result is not None and "critical emergency lasting" in result["why"]

"""Backups: create, list, verify, restore -- on SQLite, MariaDB and PostgreSQL; no password leaks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from typing import Any, Iterator

import pytest

from flask_notify_emergency.respond.emergency import activate
from tests.conftest import login, user_id
from tests.support.databases import database_with_password, own_database
from tests.support.rollback import ROOT, cli, cli_env, snapshot, wipe


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    with own_database(request.param, tmp_path) as url:
        yield url


def _populate(app: Any) -> None:
    """Rows in every table the way the app makes them: sends, claims, an event, a rollback."""
    ext = app.extensions["notify_emergency"]
    notify = app.extensions["demo"]["notify"]
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    with app.app_context():
        for n in range(5):
            notify.send(alice, f"Alice {n}", "Backed up", data={"n": n, "tags": ["a", "b"]})
            notify.send(bob, f"Bob {n}", "Backed up", priority="high")
        notify.broadcast("Maintenance tonight", level="info", title="Heads up", created_by="ops")
        activate(ext, reason="queue down", triggered_by="ops", level=2)
    client = app.test_client()
    login(client, "alice")
    client.get("/")  # claims three of Alice's as flashes
    assert cli(app, "rollback", "--reason", "drill", "--confirm").exit_code == 0


def test_backup_wipe_restore_gives_back_the_same_rows(store_url, make_app, tmp_path):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=store_url, NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    _populate(app)
    before = snapshot(app)
    assert all(before[t] for t in ("notify_emergency_notification", "notify_emergency_banner",
                                   "notify_emergency_event", "notify_emergency_audit",
                                   "notify_emergency_control", "notify_emergency_rollback_step"))

    made = cli(app, "create-backup", "--json")
    assert made.exit_code == 0, made.output
    manifest = json.loads(made.output)
    assert manifest["counts"]["notifications"] == len(before["notify_emergency_notification"]) >= 10
    assert manifest["db_dialect"] == app.extensions["notify_emergency"].engine.dialect.name

    wipe(app)
    assert not any(snapshot(app).values())
    restored = cli(app, "restore-backup", manifest["id"])  # an empty store needs no --confirm
    assert restored.exit_code == 0, restored.output

    after = snapshot(app)
    for table, rows in before.items():
        extra = {pk: row for pk, row in after[table].items() if pk not in rows}
        assert {pk: after[table][pk] for pk in rows if pk in after[table]} == rows, table
        if table == "notify_emergency_audit":  # the restore itself is audited
            assert [r["action"] for r in extra.values()] == ["restore-backup"]
        else:
            assert extra == {}, table

    again = cli(app, "restore-backup", manifest["id"], "--confirm")
    assert again.exit_code == 0 and "Nothing to change" in again.output
    # new rows get fresh ids after explicit-id inserts (PostgreSQL sequences moved past them)
    with app.app_context():
        new_id = app.extensions["demo"]["notify"].send(user_id(app, "bob"), "After restore", "fresh id")
    assert new_id > max(before["notify_emergency_notification"])


def test_restore_into_a_non_empty_store_shows_the_plan_and_needs_confirm(make_app, tmp_path):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    _populate(app)
    backup_id = json.loads(cli(app, "create-backup", "--json").output)["id"]
    backed_up = len(snapshot(app)["notify_emergency_notification"])
    ext = app.extensions["notify_emergency"]
    table = ext.models.Notification.__table__
    with ext.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == 1).values(title="Changed after the backup"))
        conn.execute(table.delete().where(table.c.id == 2))
    with app.app_context():
        app.extensions["demo"]["notify"].send(user_id(app, "bob"), "Only in the database", "kept")
    changed = snapshot(app)

    refused = cli(app, "restore-backup", backup_id)
    assert refused.exit_code == 1
    assert "--confirm" in refused.output
    line = next(ln for ln in refused.output.splitlines() if ln.strip().startswith("notifications"))
    assert "insert      1" in line and "update      1" in line and f"keep {backed_up - 2:>6}" in line
    assert "only in database (kept)      1" in line
    assert snapshot(app)["notify_emergency_notification"] == changed["notify_emergency_notification"]

    applied = cli(app, "restore-backup", backup_id, "--confirm", "--json")
    assert applied.exit_code == 0, applied.output
    result = json.loads(applied.output)
    assert result["changed"] and result["safety_backup"]
    rows = snapshot(app)["notify_emergency_notification"]
    assert rows[1]["title"] == "Alice 0" and 2 in rows
    assert any(r["title"] == "Only in the database" for r in rows.values())
    listed = json.loads(cli(app, "list-backups", "--json").output)["backups"]
    assert {b["id"] for b in listed} == {backup_id, result["safety_backup"]}


def _rewrite_member(path: str, member: str, data: bytes) -> None:
    with tarfile.open(path, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(path, "w:gz") as tar:
        for info, content in members:
            content = data if info.name == member else content
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_verify_backup_finds_damage_and_exits_non_zero(make_app, tmp_path):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    _populate(app)
    manifest = json.loads(cli(app, "create-backup", "--json").output)
    good = cli(app, "verify-backup", manifest["id"])
    assert good.exit_code == 0 and "OK" in good.output

    _rewrite_member(manifest["path"], "tables/notifications.jsonl", b'{"id": 1, "title": "forged"}\n')
    bad = cli(app, "verify-backup", "--latest", "--json")
    assert bad.exit_code == 1
    problems = json.loads(bad.output)["problems"]
    assert any("tables/notifications.jsonl: checksum mismatch" in p for p in problems)
    assert cli(app, "restore-backup", manifest["id"], "--confirm").exit_code == 1

    with open(manifest["path"], "r+b") as fh:
        fh.truncate(200)
    truncated = cli(app, "verify-backup", manifest["id"])
    assert truncated.exit_code == 1 and "cannot be read" in truncated.output
    assert cli(app, "verify-backup", "no-such-backup").exit_code == 1


def _sample_command_lines(stop: threading.Event, seen: set[str]) -> None:
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        seen.add(fh.read().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass


@pytest.mark.parametrize("kind", ["mariadb", "postgres"])
def test_the_password_is_in_neither_the_archive_nor_any_command_line(kind, tmp_path):
    with database_with_password(kind) as (url, password):
        backups = tmp_path / "backups"
        config = {"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_BACKUP_DIR": str(backups)}
        seen: set[str] = set()
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_command_lines, args=(stop, seen), daemon=True)
        sampler.start()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "flask", "--app", "tests.support.rollback:cli_app", "emergency",
                 "create-backup", "--emergency"],
                cwd=ROOT, env=cli_env(config), capture_output=True, timeout=120)
        finally:
            stop.set()
            sampler.join()
        assert proc.returncode == 0, proc.stderr.decode()
        assert any("create-backup" in line for line in seen)  # the sampler saw the command run
        archives = list(backups.glob("*.tar.gz"))
        assert len(archives) == 1
        raw = archives[0].read_bytes()
        with tarfile.open(archives[0], "r:gz") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        assert {"manifest.json", "config.redacted.json", "checksums.sha256"} <= set(members)
        for content in [raw, *members.values()]:
            assert password.encode() not in content
        assert not [line for line in seen if password in line]
        assert password not in proc.stdout.decode() + proc.stderr.decode()
        manifest = json.loads(members["manifest.json"])
        assert manifest["db_dialect"] == ("mysql" if kind == "mariadb" else "postgresql")

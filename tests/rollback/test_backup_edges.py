"""Backups on odd content: a manifest of the wrong shape is reported as invalid (never a
traceback) by ``list-backups``, ``verify-backup`` and ``verify-rollback-ready``;
``verify-backup`` catches what ``restore-backup`` would trip over (times, ids); and an archive
another app made is restored only when the operator says so (``--other-app``)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import user_id
from tests.support.cli import invoke, invoke_json
from tests.support.pages import notification_rows


def make_backup(app: Any) -> tuple[str, Path]:
    code, data = invoke_json(app, "create-backup")
    assert code == 0, data
    return data["id"], Path(data["path"])


def rewrite(path: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    """Change an archive's members and write every checksum afresh, as someone who edits an
    archive would: the checksums then match, only the content is odd."""
    with tarfile.open(path, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    change(members)
    members.pop("checksums.sha256", None)
    try:
        manifest = json.loads(members["manifest.json"])
    except ValueError:
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("checksums"), dict):
        manifest["checksums"] = {m: hashlib.sha256(d).hexdigest() for m, d in members.items() if m != "manifest.json"}
        members["manifest.json"] = json.dumps(manifest).encode()
    members["checksums.sha256"] = "".join(f"{hashlib.sha256(d).hexdigest()}  {m}\n"
                                          for m, d in members.items()).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name in ["manifest.json", *[m for m in members if m != "manifest.json"]]:
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))


def set_manifest(**fields: Any) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        manifest.update(fields)
        members["manifest.json"] = json.dumps(manifest).encode()
    return change


def replace_manifest(document: Any) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        members["manifest.json"] = json.dumps(document).encode()
    return change


BAD_MANIFESTS = {
    "tables-list": set_manifest(tables=["notifications"]),
    "table-info-text": set_manifest(tables={"notifications": "tables/notifications.jsonl"}),
    "rows-not-a-count": set_manifest(tables={"notifications": {"file": "tables/notifications.jsonl", "rows": "7"}}),
    "created-at-not-a-time": set_manifest(created_at="yesterday"),
    "created-at-missing": set_manifest(created_at=None),
    "counts-list": set_manifest(counts=[1, 2]),
    "identity-text": set_manifest(app_identity="app"),
    "manifest-a-list": replace_manifest(["flask-notify-emergency-backup"]),
    "manifest-format-only": replace_manifest({"format": "flask-notify-emergency-backup", "version": 1}),
}


@pytest.mark.parametrize("name", list(BAD_MANIFESTS))
def test_a_manifest_of_the_wrong_shape_is_reported_invalid_by_every_command(make_app, tmp_path, name):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    with app.app_context():
        app.extensions["demo"]["notify"].send(user_id(app, "alice"), "t", "m")
    backup_id, path = make_backup(app)
    rewrite(path, BAD_MANIFESTS[name])

    listed = invoke(app, "list-backups")
    assert listed.exit_code == 0 and "Traceback" not in listed.output
    assert f"{backup_id}  UNREADABLE" in listed.output
    code, data = invoke_json(app, "list-backups")
    assert code == 0 and "error" in data["backups"][0]

    code, check = invoke_json(app, "verify-backup", backup_id)
    assert code == 1 and check["ok"] is False
    assert any("manifest" in p for p in check["problems"]), check["problems"]

    ready = invoke(app, "verify-rollback-ready")
    assert ready.exit_code == 1 and "Traceback" not in ready.output
    code, data = invoke_json(app, "verify-rollback-ready")
    backup_check = next(c for c in data["checks"] if c["name"] == "backup")
    assert backup_check["ok"] is False and backup_id in backup_check["detail"]

    restored = invoke(app, "restore-backup", backup_id, "--confirm")
    assert restored.exit_code == 1 and "Traceback" not in restored.output


def rewrite_first_row(table: str, **fields: Any) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        lines = members[f"tables/{table}.jsonl"].decode().splitlines()
        row = json.loads(lines[0])
        row.update(fields)
        lines[0] = json.dumps(row)
        members[f"tables/{table}.jsonl"] = ("\n".join(lines) + "\n").encode()
    return change


@pytest.mark.parametrize("table,fields,problem", [
    ("notifications", {"created_at": "not a time"}, "created_at 'not a time' is not a time"),
    ("notifications", {"delivered_at": 1700000000}, "delivered_at '1700000000' is not a time"),
    ("notifications", {"id": "seven"}, "id 'seven' is not an id"),
    ("notifications", {"id": 2**70}, "is not an id"),
    ("notifications", {"id": -3}, "id '-3' is not an id"),
    ("notifications", {"title": None}, "title is empty"),
    ("control", {"key": ""}, "key '' is not a key"),
], ids=["time-text", "time-number", "id-text", "id-huge", "id-negative", "required-null", "key-empty"])
def test_verify_backup_catches_what_restore_would_trip_over(make_app, tmp_path, table, fields, problem):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"))
    with app.app_context():
        app.extensions["demo"]["notify"].send(user_id(app, "alice"), "t", "m")
    invoke(app, "activate-emergency", "--reason", "a control row to back up")
    backup_id, path = make_backup(app)
    rewrite(path, rewrite_first_row(table, **fields))

    code, check = invoke_json(app, "verify-backup", backup_id)
    assert code == 1
    assert any(problem in p for p in check["problems"]), check["problems"]
    before = notification_rows(app)
    restored = invoke(app, "restore-backup", backup_id, "--confirm")
    assert restored.exit_code == 1 and "does not verify" in restored.output
    assert notification_rows(app) == before


def test_restore_refuses_another_apps_archive_unless_told(make_app, tmp_path):
    shared = str(tmp_path / "backups")
    one, _ = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'one.sqlite'}", NOTIFY_EMERGENCY_BACKUP_DIR=shared)
    with one.app_context():
        one.extensions["demo"]["notify"].send(user_id(one, "alice"), "From app one", "m")
    backup_id, path = make_backup(one)
    with tarfile.open(path, "r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["app_identity"] == {"app": one.import_name, "database": "one.sqlite"}

    two, _ = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'two.sqlite'}", NOTIFY_EMERGENCY_BACKUP_DIR=shared)
    refused = invoke(two, "restore-backup", backup_id, "--confirm")
    assert refused.exit_code == 1
    assert "was made by app" in refused.output and "'one.sqlite'" in refused.output
    assert "--other-app" in refused.output
    assert notification_rows(two) == []

    # the app that made it restores it without being told
    assert invoke(one, "restore-backup", backup_id, "--confirm").exit_code == 0

    done = invoke(two, "restore-backup", backup_id, "--confirm", "--other-app")
    assert done.exit_code == 0, done.output
    assert [r["title"] for r in notification_rows(two)] == ["From app one"]

"""Backups of the extension's tables: self-describing, checksummed ``.tar.gz`` archives.

An archive ``<id>.tar.gz`` in ``NOTIFY_EMERGENCY_BACKUP_DIR`` holds, in this order:

* ``manifest.json``: format version, id, created_at, reason, who, app name, the app's
  identity (import name and database name: restore refuses another app's archive unless
  told), database dialect, the table list with row counts, and the SHA-256 of every other
  member;
* ``config.redacted.json``: the ``NOTIFY_EMERGENCY_*`` settings, secrets redacted;
* ``tables/<name>.jsonl``: one JSON object per row (times as naive-UTC ISO text);
* ``checksums.sha256``: ``sha256sum -c`` compatible lines for every member.

Everything is read and written through SQLAlchemy Core on the host's engine, so the same
code serves SQLite, MariaDB and PostgreSQL, and no database client program (whose command
line could show a password) is ever started. The checksums catch corruption (a truncated
copy, a flipped bit), not tampering: whoever can write an archive can rewrite its checksums
too, so keep the backup directory writable only by the app. Restoring upserts by primary key: rows missing
are inserted, rows that differ are updated, rows only in the database are kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import io
import json
import os
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa

from .. import config as cfgmod
from ..models import MAX_ROW_ID, utcnow

FORMAT = "flask-notify-emergency-backup"
FORMAT_VERSION = 1
SUFFIX = ".tar.gz"
#: friendly archive names of the core tables; any other model's table is archived under
#: its table name without the ``notify_emergency_`` prefix
NAMES = {"Notification": "notifications", "Banner": "banners", "EmergencyEvent": "events", "AuditEntry": "audit",
         "ControlState": "control", "RollbackStep": "journal", "Drill": "drills"}
#: control keys that describe a running process, never restored
VOLATILE_KEYS = ("rollback_lock",)
BATCH = 1000


class BackupError(Exception):
    """A backup could not be written, found, read or restored; the message says why."""


def backup_dir(ext: Any) -> Path:
    path = Path(ext.app.config["NOTIFY_EMERGENCY_BACKUP_DIR"])
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def archive_tables(ext: Any) -> dict[str, sa.Table]:
    """Archive name -> table, for every model of the extension."""
    out: dict[str, sa.Table] = {}
    for model in ext.models.all:
        table = model.__table__
        out[NAMES.get(model.__name__, table.name.removeprefix("notify_emergency_"))] = table
    return out


def table_of(ext: Any, name: str) -> sa.Table:
    try:
        return archive_tables(ext)[name]
    except KeyError:
        raise BackupError(f"this installation has no table {name!r} (known: "
                          f"{', '.join(archive_tables(ext))}); upgrade flask-notify-emergency to restore it.") from None


def _pk(table: sa.Table) -> sa.Column[Any]:
    return list(table.primary_key.columns)[0]


def iter_rows(engine: sa.engine.Engine, table: sa.Table) -> Iterator[dict[str, Any]]:
    """Every row of ``table``, in primary-key order, a page at a time."""
    pk = _pk(table)
    last: Any = None
    while True:
        q = sa.select(table).order_by(pk).limit(BATCH)
        if last is not None:
            q = q.where(pk > last)
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        yield from rows
        if len(rows) < BATCH:
            return
        last = rows[-1][pk.name]


def encode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}


def decode(table: sa.Table, data: dict[str, Any]) -> dict[str, Any]:
    """A row read from an archive, with times turned back into datetimes."""
    out: dict[str, Any] = {}
    for col in table.columns:
        if col.name not in data:
            continue
        value = data[col.name]
        if isinstance(col.type, sa.DateTime) and isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        out[col.name] = value
    return out


def package_version() -> str:
    """The installed flask-notify-emergency's version (recorded in each manifest)."""
    try:
        return importlib.metadata.version("flask-notify-emergency")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create_backup(ext: Any, *, actor: str, source: str, emergency: bool = False,
                  reason: str | None = None) -> dict[str, Any]:
    """Write an archive of every table; verify it; return its manifest (with ``path``)."""
    now = utcnow()
    backup_id = f"notify-emergency-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if emergency:
        backup_id += "-emergency"
    members: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    tables = archive_tables(ext)
    for name, table in tables.items():
        lines = [json.dumps(encode(r), sort_keys=True, default=str) for r in iter_rows(ext.engine, table)]
        counts[name] = len(lines)
        members[f"tables/{name}.jsonl"] = ("\n".join(lines) + ("\n" if lines else "")).encode()
    members["config.redacted.json"] = json.dumps(cfgmod.redacted(dict(ext.app.config)), indent=2,
                                                 sort_keys=True, default=str).encode()
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "id": backup_id,
        "created_at": now.isoformat() + "Z", "created_by": actor, "source": source,
        "emergency": emergency, "reason": reason, "app_name": ext.app.name, "app_identity": app_identity(ext),
        "db_dialect": ext.engine.dialect.name, "package_version": package_version(),
        "tables": {name: {"table": table.name, "rows": counts[name],
                          "file": f"tables/{name}.jsonl"} for name, table in tables.items()},
        "counts": counts,
        "checksums": {member: _sha256(data) for member, data in members.items()},
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    ordered = {"manifest.json": manifest_bytes, **members}
    checksums = "".join(f"{_sha256(data)}  {member}\n" for member, data in ordered.items()).encode()
    ordered["checksums.sha256"] = checksums

    directory = backup_dir(ext)
    final = directory / f"{backup_id}{SUFFIX}"
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for member, data in ordered.items():
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.mode = len(data), int(now.timestamp()), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)  # readers never see a half-written archive
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    result = verify_backup(ext, backup_id)
    ext.audit.record(actor, "create-backup", source,
                     {"backup_id": backup_id, "emergency": emergency, "reason": reason, "counts": counts},
                     outcome="ok" if result["ok"] else "failed",
                     detail=None if result["ok"] else "; ".join(result["problems"]))
    if not result["ok"]:
        raise BackupError(f"backup {backup_id} was written but does not verify: {'; '.join(result['problems'])}")
    return dict(manifest, path=str(final), verified=True)


def read_manifest(path: Path) -> dict[str, Any]:
    with tarfile.open(path, "r:gz") as tar:
        member = tar.next()
        if member is None or member.name != "manifest.json":
            raise BackupError(f"{path.name}: the first member is not manifest.json")
        fh = tar.extractfile(member)
        assert fh is not None
        manifest = json.loads(fh.read())
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path.name}: not a flask-notify-emergency backup")
    problems = manifest_problems(manifest)
    if problems:
        raise BackupError(f"{path.name}: invalid manifest: {'; '.join(problems)}")
    return manifest


def app_identity(ext: Any) -> dict[str, Any]:
    """Which app and database a backup is of: the app's import name and the database's name
    (the file name for SQLite), never its host or credentials."""
    database = ext.engine.url.database or ""
    if ext.engine.dialect.name == "sqlite":
        database = os.path.basename(database)
    return {"app": ext.app.import_name, "database": database}


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value.rstrip("Z"))
    except ValueError:
        return False
    return True


def manifest_problems(manifest: Any) -> list[str]:
    """What is wrong with the shape of a manifest (empty when every field restore reads is
    there, of the right type)."""
    if not isinstance(manifest, dict):
        return [f"the manifest is a {type(manifest).__name__}, not an object"]
    problems = []
    if not isinstance(manifest.get("id"), str) or not manifest.get("id"):
        problems.append("'id' is not a non-empty string")
    if not _is_time(manifest.get("created_at")):
        problems.append(f"'created_at' is not a time: {str(manifest.get('created_at'))[:40]!r}")
    identity = manifest.get("app_identity")
    if identity is not None and not (isinstance(identity, dict)
                                     and all(isinstance(identity.get(k), str) for k in ("app", "database"))):
        problems.append("'app_identity' is not {'app': str, 'database': str}")
    for key in ("counts", "checksums"):
        if not isinstance(manifest.get(key), dict):
            problems.append(f"{key!r} is not an object")
    tables = manifest.get("tables")
    if not isinstance(tables, dict):
        problems.append("'tables' is not an object")
        return problems
    for name, info in tables.items():
        if not (isinstance(info, dict) and isinstance(info.get("file"), str)
                and isinstance(info.get("rows"), int) and not isinstance(info.get("rows"), bool)
                and info["rows"] >= 0):
            problems.append(f"table {str(name)[:40]!r}: needs 'file' (a string) and 'rows' (a count)")
    return problems


def list_backups(ext: Any) -> list[dict[str, Any]]:
    """Every archive in the backup directory, newest first (unreadable ones flagged)."""
    out = []
    for path in sorted(backup_dir(ext).glob(f"*{SUFFIX}"), reverse=True):
        if path.name.startswith(".partial-"):
            continue
        backup_id = path.name[: -len(SUFFIX)]
        entry: dict[str, Any] = {"id": backup_id, "path": str(path), "size": path.stat().st_size}
        try:
            manifest = read_manifest(path)
            entry.update({k: manifest.get(k) for k in ("created_at", "created_by", "emergency", "reason",
                                                        "db_dialect", "app_name", "counts")})
        except (BackupError, tarfile.TarError, OSError, ValueError) as exc:
            entry["error"] = str(exc)
        entry["verification"] = last_verification(ext, backup_id)
        out.append(entry)
    out.sort(key=lambda e: e.get("created_at") or "", reverse=True)
    return out


def find_backup(ext: Any, backup_id: str | None = None) -> Path:
    """The archive of ``backup_id`` (a file name or id), or the newest one when None."""
    if backup_id is None:
        backups = [b for b in list_backups(ext) if "error" not in b]
        if not backups:
            raise BackupError(f"there is no backup in {backup_dir(ext)}: run 'create-backup' first.")
        return Path(backups[0]["path"])
    name = os.path.basename(backup_id.strip())
    if name.endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    path = backup_dir(ext) / f"{name}{SUFFIX}"
    if not name or not path.is_file():
        raise BackupError(f"no backup {backup_id!r} in {backup_dir(ext)}: see 'list-backups'.")
    return path


def _verification_file(ext: Any, backup_id: str) -> Path:
    return backup_dir(ext) / f"{backup_id}.verified.json"


def last_verification(ext: Any, backup_id: str) -> dict[str, Any] | None:
    """The last verify result of a backup (kept next to it, so verifying writes no table)."""
    try:
        return json.loads(_verification_file(ext, backup_id).read_text())
    except (OSError, ValueError):
        return None


def read_members(path: Path) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
                raise BackupError(f"{path.name}: unexpected member {member.name!r}")
            fh = tar.extractfile(member)
            assert fh is not None
            members[member.name] = fh.read()
    return members


def verify_backup(ext: Any, backup_id: str | None = None) -> dict[str, Any]:
    """Check an archive: it opens, every checksum matches, every row parses, counts agree."""
    path = find_backup(ext, backup_id)
    bid = path.name[: -len(SUFFIX)]
    problems: list[str] = []
    manifest: dict[str, Any] = {}
    try:
        members = read_members(path)
        loaded = json.loads(members["manifest.json"])
        shape = manifest_problems(loaded)
        if shape:
            raise MalformedManifest("; ".join(shape))
        manifest = loaded
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            problems.append(f"unknown format {manifest.get('format')!r} version {manifest.get('version')!r}")
        listed: dict[str, str] = {}
        for line in members.get("checksums.sha256", b"").decode().splitlines():
            digest, _, member = line.partition("  ")
            listed[member] = digest
        if not listed:
            problems.append("checksums.sha256 is missing or empty")
        unlisted = set(members) - set(listed) - {"checksums.sha256"}
        problems.extend(f"{member} has no checksum" for member in sorted(unlisted))
        for source_of, digests in (("checksums.sha256", listed), ("manifest", manifest.get("checksums") or {})):
            for member, digest in digests.items():
                if member not in members:
                    problems.append(f"{member} (listed in {source_of}) is missing")
                elif _sha256(members[member]) != digest:
                    problems.append(f"{member}: checksum mismatch ({source_of})")
        for name, info in (manifest.get("tables") or {}).items():
            if name not in archive_tables(ext):
                problems.append(f"table {name!r} is unknown to this installation")
                continue
            lines = [ln for ln in members.get(info["file"], b"").decode().splitlines() if ln.strip()]
            if len(lines) != info["rows"]:
                problems.append(f"{info['file']}: {len(lines)} rows, manifest says {info['rows']}")
            table = table_of(ext, name)
            columns = {c.name for c in table.columns}
            for n, line in enumerate(lines, 1):
                row = json.loads(line)
                if not isinstance(row, dict) or not set(row) <= columns:
                    problems.append(f"{info['file']} line {n}: columns do not match the table")
                    break
                wrong = row_problem(table, row)
                if wrong:  # what restoring it would trip over
                    problems.append(f"{info['file']} line {n}: {wrong}")
                    break
    except MalformedManifest as exc:
        problems.append(f"invalid manifest: {exc}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append(f"the archive cannot be read: {exc}")
    except (KeyError, ValueError, TypeError) as exc:
        problems.append(f"the archive is incomplete or malformed: {exc}")
    stat = path.stat()
    result = {"id": bid, "path": str(path), "ok": not problems, "problems": problems,
              "checked_at": utcnow().isoformat() + "Z", "created_at": manifest.get("created_at"),
              "counts": manifest.get("counts"), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        _verification_file(ext, bid).write_text(json.dumps(result, indent=2))
    except OSError:
        pass  # a read-only backup directory still verifies
    return result


class MalformedManifest(ValueError):
    """The manifest is not of the shape restore reads."""


def row_problem(table: sa.Table, row: dict[str, Any]) -> str | None:
    """Why restoring this archived row would fail (a time that does not parse, a missing or
    out-of-range id), or None."""
    pk = _pk(table)
    key = row.get(pk.name)
    if isinstance(pk.type, sa.Integer):
        if isinstance(key, bool) or not isinstance(key, int) or not 0 < key <= MAX_ROW_ID:
            return f"{pk.name} {str(key)[:40]!r} is not an id (a whole number from 1 to {MAX_ROW_ID})"
    elif not isinstance(key, str) or not key:
        return f"{pk.name} {str(key)[:40]!r} is not a key"
    for col in table.columns:
        value = row.get(col.name)
        if isinstance(col.type, sa.DateTime) and value is not None and not _is_time(value):
            return f"{col.name} {str(value)[:40]!r} is not a time"
        if value is None and col.name in row and not col.nullable and not col.primary_key:
            return f"{col.name} is empty, and the table needs it"
    return None


def verification(ext: Any, backup_id: str | None = None) -> dict[str, Any]:
    """The last verify result while the archive is unchanged since (same size and mtime),
    else a fresh :func:`verify_backup` -- cheap enough for a dashboard that refreshes."""
    path = find_backup(ext, backup_id)
    last = last_verification(ext, path.name[: -len(SUFFIX)])
    stat = path.stat()
    if last and last.get("size") == stat.st_size and last.get("mtime_ns") == stat.st_mtime_ns:
        return last
    return verify_backup(ext, path.name)


def load_rows(ext: Any, path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows from a verified archive, decoded for inserting."""
    members = read_members(path)
    manifest = json.loads(members["manifest.json"])
    out: dict[str, list[dict[str, Any]]] = {}
    for name, info in manifest["tables"].items():
        table = table_of(ext, name)
        out[name] = [decode(table, json.loads(ln)) for ln in members[info["file"]].decode().splitlines() if ln.strip()]
    return out

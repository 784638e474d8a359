"""Restoring a backup: plan first, then upsert by primary key in one transaction.

Restoring never deletes: a row missing from the database is inserted, a row that differs
is updated to the archived content, a row only in the database is kept. Running the same
restore twice changes nothing the second time. Into a store that already holds data the
plan (counts to insert / update / keep, switches that would change) is shown first and
``confirm=True`` is required; a safety backup of the current content is written before
anything changes, so a restore can itself be undone.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from ..control import CACHED_KEYS
from .backups import (
    VOLATILE_KEYS,
    BackupError,
    app_identity,
    archive_tables,
    create_backup,
    encode,
    find_backup,
    load_rows,
    read_manifest,
    verify_backup,
)

CHUNK = 500


def _comparable(value: Any) -> Any:
    # MariaDB's DATETIME keeps whole seconds: compare times at that precision, so restoring
    # an archive made on another database is still idempotent
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            return dt.datetime.fromisoformat(value).replace(microsecond=0).isoformat()
        except ValueError:
            return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def same_row(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two rows hold the same content (times compared to the second)."""
    keys = set(a) | set(b)
    return all(_comparable(a.get(k)) == _comparable(b.get(k)) for k in keys)


def _existing(conn: sa.Connection, table: sa.Table, keys: list[Any]) -> dict[Any, dict[str, Any]]:
    pk = list(table.primary_key.columns)[0]
    found: dict[Any, dict[str, Any]] = {}
    for i in range(0, len(keys), CHUNK):
        part = keys[i:i + CHUNK]
        for r in conn.execute(sa.select(table).where(pk.in_(part))):
            row = dict(r._mapping)
            found[row[pk.name]] = row
    return found


def _classify(ext: Any, rows: dict[str, list[dict[str, Any]]], keep_switches: bool) -> dict[str, Any]:
    plan: dict[str, Any] = {"tables": {}, "switches": [], "store_empty": True}
    actions: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with ext.engine.connect() as conn:
        for name, table in archive_tables(ext).items():
            pk = list(table.primary_key.columns)[0].name
            archived = [r for r in rows.get(name, []) if not (name == "control" and r.get("key") in VOLATILE_KEYS)]
            existing = _existing(conn, table, [r[pk] for r in archived])
            in_db = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
            if in_db and not (name == "control" and _only_volatile(conn, table)):
                plan["store_empty"] = False
            todo: dict[str, list[dict[str, Any]]] = {"insert": [], "update": [], "keep": []}
            for row in archived:
                current = existing.get(row[pk])
                if current is None:
                    todo["insert"].append(row)
                elif same_row(encode(current), encode(row)):
                    todo["keep"].append(row)
                elif name == "control" and keep_switches:
                    todo["keep"].append(row)
                else:
                    todo["update"].append(row)
                if name == "control" and current is not None and current.get("value") != row.get("value"):
                    plan["switches"].append({"key": row["key"], "current": current.get("value"),
                                             "backup": row.get("value"), "kept": keep_switches})
            actions[name] = todo
            plan["tables"][name] = {"insert": len(todo["insert"]), "update": len(todo["update"]),
                                    "keep": len(todo["keep"]),
                                    "only_in_database": in_db - len(existing)}
    plan["totals"] = {k: sum(t[k] for t in plan["tables"].values()) for k in ("insert", "update", "keep")}
    plan["_actions"] = actions
    return plan


def _only_volatile(conn: sa.Connection, table: sa.Table) -> bool:
    keys = {r[0] for r in conn.execute(sa.select(table.c.key))}
    return keys <= set(VOLATILE_KEYS)


def restore_plan(ext: Any, backup_id: str | None, keep_switches: bool = False,
                 other_app: bool = False) -> dict[str, Any]:
    """What restoring ``backup_id`` would do, changing nothing. An archive another app made
    (see :func:`.backups.app_identity`) is refused unless ``other_app``."""
    path = find_backup(ext, backup_id)
    check = verify_backup(ext, path.name)
    if not check["ok"]:
        raise BackupError(f"backup {check['id']} does not verify, refusing to restore it: "
                          f"{'; '.join(check['problems'])}")
    made_by = read_manifest(path).get("app_identity")
    here = app_identity(ext)
    if made_by is not None and made_by != here and not other_app:
        raise BackupError(f"backup {check['id']} was made by app {made_by['app']!r} on database "
                          f"{made_by['database']!r}; this is app {here['app']!r} on database {here['database']!r}. "
                          "Restoring it would mix another app's data into this one: if that is what you "
                          "want, run again with --other-app.")
    plan = _classify(ext, load_rows(ext, path), keep_switches)
    plan["backup_id"] = check["id"]
    return plan


def public_plan(plan: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in plan.items() if not k.startswith("_")}


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """The plan as text for the operator."""
    lines = [f"Restoring {plan['backup_id']} into a {'empty' if plan['store_empty'] else 'non-empty'} store:"]
    for name, t in plan["tables"].items():
        lines.append(f"  {name:<14} insert {t['insert']:>6}  update {t['update']:>6}  keep {t['keep']:>6}"
                     f"  only in database (kept) {t['only_in_database']:>6}")
    for s in plan["switches"]:
        verb = "stays" if s["kept"] else "becomes"
        lines.append(f"  switch {s['key']!r}: now {json.dumps(s['current'])}, {verb} "
                     f"{json.dumps(s['current'] if s['kept'] else s['backup'])}")
    return lines


def restore_backup(ext: Any, backup_id: str | None, *, confirm: bool, actor: str, source: str,
                   keep_switches: bool = False, safety_backup: bool = True,
                   other_app: bool = False) -> dict[str, Any]:
    """Upsert an archive's rows; needs ``confirm`` unless the store is empty, and
    ``other_app`` for an archive another app made."""
    plan = restore_plan(ext, backup_id, keep_switches, other_app)
    args = {"backup_id": plan["backup_id"], "keep_switches": keep_switches, "other_app": other_app}
    if not plan["store_empty"] and not confirm:
        ext.audit.record(actor, "restore-backup", source, args, outcome="refused", detail="no --confirm")
        raise BackupError("the store already holds data: read the plan above, then run again with "
                          "--confirm to apply it (rows only in the database are kept).")
    if plan["totals"]["insert"] == 0 and plan["totals"]["update"] == 0:
        ext.audit.record(actor, "restore-backup", source, args, outcome="noop", detail="nothing to change")
        return dict(public_plan(plan), changed=False, safety_backup=None)
    safety = None
    if safety_backup and not plan["store_empty"]:
        safety = create_backup(ext, actor=actor, source=source,
                               reason=f"automatic, before restoring {plan['backup_id']}")["id"]
    actions = plan["_actions"]
    with ext.engine.begin() as conn:  # all tables or none
        for name, table in archive_tables(ext).items():
            pk = list(table.primary_key.columns)[0]
            todo = actions[name]
            for i in range(0, len(todo["insert"]), CHUNK):
                conn.execute(table.insert(), todo["insert"][i:i + CHUNK])
            for row in todo["update"]:
                conn.execute(table.update().where(pk == row[pk.name])
                             .values({k: v for k, v in row.items() if k != pk.name}))
    _fix_sequences(ext)
    _spread_switches(ext, actions["control"]["insert"] + actions["control"]["update"],
                     bool(actions["banners"]["insert"] or actions["banners"]["update"]))
    ext.audit.record(actor, "restore-backup", source, dict(args, safety_backup=safety, totals=plan["totals"]))
    return dict(public_plan(plan), changed=True, safety_backup=safety)


def _fix_sequences(ext: Any) -> None:
    """PostgreSQL sequences do not follow explicit ids: move them past the restored rows."""
    if ext.engine.dialect.name != "postgresql":
        return
    with ext.engine.begin() as conn:
        for table in archive_tables(ext).values():
            pk = list(table.primary_key.columns)[0]
            if not pk.autoincrement or not isinstance(pk.type, sa.Integer):
                continue
            conn.execute(sa.text(
                f"SELECT setval(pg_get_serial_sequence(:t, :c), COALESCE(MAX({pk.name}), 1), "
                f"MAX({pk.name}) IS NOT NULL) FROM {table.name}"), {"t": table.name, "c": pk.name})


def _spread_switches(ext: Any, rows: list[dict[str, Any]], banners_changed: bool) -> None:
    """Tell every worker about restored switches (the database already holds them)."""
    import uuid

    for row in rows:
        if row["key"] in CACHED_KEYS:
            ext.state.set(row["key"], row.get("value"))
    if banners_changed:
        # a cache-buster only: workers reload banners; the stored version stays as restored
        ext.state.set("banners_version", uuid.uuid4().hex)

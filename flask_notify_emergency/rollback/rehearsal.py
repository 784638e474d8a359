"""``test-rollback --dry-run``: the whole rollback, verified and restored, on a throwaway copy.

The extension's tables are copied into a temporary SQLite database; a :class:`Sandbox` with
its own memory state, control switches and store stands in for the extension's state, so
the real steps (:mod:`.rollback_steps`) and the real journal run against the copy. Nothing
is written to the real database or Redis, and no signal reaches the real app (the sandbox
has an app object of its own), so no browser hears of the rehearsal.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Flask

from ..audit import AuditLog
from ..control import Control
from ..delivery import NotificationStore
from ..state import SharedState
from .backups import iter_rows
from .execute import _execute
from .steps import RESTORE_STEPS, ROLLBACK_STEPS, current_values
from .validation import check_database


class Sandbox:
    """The attributes the rollback steps use, on a copy of the data."""

    def __init__(self, ext: Any, engine: sa.engine.Engine) -> None:
        self.app = Flask(__name__)  # its own app: signals sent for it reach no real receiver
        self.app.config.update({k: v for k, v in ext.app.config.items() if k.startswith("NOTIFY_EMERGENCY_")})
        self.engine = engine
        self.models = ext.models
        self.store = NotificationStore(engine, ext.models)
        self.state = SharedState(self._load, refresh_seconds=3600.0)
        self.control = Control(self.app, engine, ext.models, self.state)
        self.audit = AuditLog(engine, ext.models)
        self.state.refresh()

    def _load(self) -> tuple[dict[str, Any], set[str]]:
        return self.control.load(), self.store.pending_user_ids()

    def banners_changed(self, actor: str | None = None) -> None:
        self.control.write("banners_version", uuid.uuid4().hex, actor)


def copy_tables(ext: Any, engine: sa.engine.Engine) -> dict[str, int]:
    """Create our tables in ``engine`` and copy every row into them."""
    tables = [m.__table__ for m in ext.models.all]
    tables[0].metadata.create_all(engine, tables=tables)
    counts = {}
    for table in tables:
        batch: list[dict[str, Any]] = []
        n = 0
        with engine.begin() as conn:
            for row in iter_rows(ext.engine, table):
                batch.append(row)
                if len(batch) >= 500:
                    conn.execute(table.insert(), batch)
                    n, batch = n + len(batch), []
            if batch:
                conn.execute(table.insert(), batch)
                n += len(batch)
        counts[table.name] = n
    return counts


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def verify_sandbox_rolled_back(box: Sandbox) -> list[dict[str, Any]]:
    values = current_values(box)
    t = box.models.Notification.__table__
    with box.engine.connect() as conn:
        waiting_on_realtime = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.delivered == sa.false(), t.c.realtime_deadline.is_not(None))).scalar() or 0)
    pending = box.store.pending_user_ids()
    unmarked = sorted(u for u in pending if not box.state.may_have_pending(u))
    return [
        _check("mode", values["mode"] == "legacy", f"mode '{values['mode']}'"),
        _check("paused", bool(values["paused"].get("realtime")), f"paused {values['paused']}"),
        _check("backlog", waiting_on_realtime == 0 and not unmarked,
               f"{values['undelivered']} undelivered, {waiting_on_realtime} still waiting on real time, "
               f"{len(unmarked)} users not marked pending"),
        _check("banner", values["rollback_banner"] is not None, f"rollback banner {values['rollback_banner']}"),
    ]


def verify_sandbox_restored(box: Sandbox) -> list[dict[str, Any]]:
    values = current_values(box)
    return [
        _check("mode-restored", values["mode"] in ("normal", "emergency"), f"mode '{values['mode']}'"),
        _check("resumed", not values["paused"].get("realtime"), f"paused {values['paused']}"),
        _check("banner-dismissed", values["rollback_banner"] is None, f"rollback banner {values['rollback_banner']}"),
    ]


def test_rollback(ext: Any, *, actor: str) -> dict[str, Any]:
    """Rehearse rollback, verification and restore on a copy; report, change nothing real."""
    started = time.monotonic()
    report: dict[str, Any] = {"ok": False, "steps": [], "checks": []}
    with tempfile.TemporaryDirectory(prefix="notify-emergency-rehearsal-") as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/copy.sqlite")
        try:
            report["copied"] = copy_tables(ext, engine)
            box = Sandbox(ext, engine)
            report["before"] = current_values(box)

            def note(step: str, detail: dict[str, Any]) -> None:
                report["steps"].append({"operation": phase, "step": step, "detail": detail})

            phase = "rollback"
            rolled = _execute(box, operation="rollback", steps=ROLLBACK_STEPS, actor=actor, source="rehearsal",
                              begin_detail={"reason": "rehearsal", "source": "rehearsal"},
                              resume_kind="rollback", on_step=note)
            report["checks"] += verify_sandbox_rolled_back(box)
            phase = "restore"
            restored = _execute(box, operation="restore", steps=RESTORE_STEPS, actor=actor, source="rehearsal",
                                begin_detail={"reason": "rehearsal", "source": "rehearsal"},
                                resume_kind="restore", on_step=note)
            report["checks"] += verify_sandbox_restored(box)
            database = check_database(box)
            report["checks"].append(_check("database", database["ok"], "; ".join(
                c["detail"] for c in database["checks"] if not c["ok"]) or "all checks pass on the copy"))
            report["operations"] = [rolled["operation_id"], restored["operation_id"]]
            report["ok"] = all(c["ok"] for c in report["checks"])
        except Exception as exc:  # the report says what broke; the real store is untouched either way
            report["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            engine.dispose()
    report["seconds"] = round(time.monotonic() - started, 2)
    return report

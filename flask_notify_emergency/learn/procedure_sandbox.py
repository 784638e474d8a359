"""``test-emergency-procedures``: the runbook's emergency procedures, run for real on a copy.

The extension's tables are copied into a throwaway SQLite database (as the rollback
rehearsal does), and a second, private Flask app runs a real :class:`NotifyEmergency` on it
with the memory state, no monitor, no CLI, no alert targets, and a stand-in real-time
notifier that records what it is handed. Then, step by step, with each step checked:

activate emergency -> a notification goes to the fallbacks and is claimed exactly once ->
the flash and broadcast fallbacks are enabled and show -> recovery (fallbacks off, breaker
closed) -> deactivate emergency -> a notification takes the real-time path again.

Signals are sent for the private app, so no receiver of the real app (alerts, dashboard
pushes) hears of it; the last step checks the real app's switches did not move.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any, Callable

import sqlalchemy as sa

from .. import signals
from ..delivery import claim_for_user
from ..respond import disable_fallback, emergency, enable_fallback
from ..rollback import copy_tables

SANDBOX_USER = "procedure-test-user"


def _private_app(ext: Any, directory: str) -> tuple[Any, Any, list[tuple[str, dict[str, Any]]]]:
    """A Flask app with its own NotifyEmergency on ``directory``'s SQLite copy."""
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import DeclarativeBase

    app = Flask("notify_emergency_procedure_sandbox", instance_path=directory)
    app.config.update({k: v for k, v in ext.app.config.items() if k.startswith("NOTIFY_EMERGENCY_")})
    app.config.update({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{os.path.join(directory, 'copy.sqlite')}",
        "SECRET_KEY": "procedure-sandbox",
        "NOTIFY_EMERGENCY_STATE_BACKEND": "memory", "NOTIFY_EMERGENCY_REDIS_URL": None,
        "NOTIFY_EMERGENCY_MONITOR_ENABLED": False, "NOTIFY_EMERGENCY_CLI_GROUP": None,
        "NOTIFY_EMERGENCY_ALERT_EMAILS": [], "NOTIFY_EMERGENCY_ALERT_SMS_NUMBERS": [],
        "NOTIFY_EMERGENCY_ALERT_WEBHOOKS": [], "NOTIFY_EMERGENCY_SERVICE_COMMANDS": {},
        "NOTIFY_EMERGENCY_AUTO_ROLLBACK": False, "NOTIFY_EMERGENCY_ADMIN_USER_IDS": None,
        "NOTIFY_EMERGENCY_BACKUP_DIR": os.path.join(directory, "backups"),
    })

    class Base(DeclarativeBase):
        """The sandbox's own declarative base."""

    db = SQLAlchemy(app, model_class=Base)
    handed: list[tuple[str, dict[str, Any]]] = []

    def realtime_stand_in(user_id: str, payload: dict[str, Any]) -> bool:
        handed.append((user_id, payload))
        return True  # "the browser acknowledged it"

    # the same extension class the host runs (a subclass included), on the private app
    type(ext.extension)(app, db=db, notifier=realtime_stand_in, user_exists=lambda uid: True)
    return app, db, handed


def _copy(ext: Any, sandbox: Any, db: Any) -> dict[str, int]:
    with sandbox.app_context():
        counts = copy_tables(ext, db.engine)
        db.create_all()  # anything the copy lacks (nothing, normally)
    return counts


def _host_switches(ext: Any) -> dict[str, Any]:
    t = ext.models.EmergencyEvent.__table__
    with ext.engine.connect() as conn:
        events = int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0)
    return {"mode": ext.control.read("mode", "normal"), "paused": ext.control.read("paused", {}),
            "breaker": ext.control.read("breaker"), "events": events}


def _dismantle(app: Any, db: Any) -> None:
    """Stop the private app's threads and let go of its receivers and connections."""
    box = app.extensions["notify_emergency"]
    box.close()
    for name in signals.__all__:
        for receiver in box.receivers:
            getattr(signals, name).disconnect(receiver, sender=app)
    with app.app_context():
        db.engine.dispose()


def run_procedure_tests(ext: Any, *, actor: str, source: str = "cli") -> dict[str, Any]:
    """Run every procedure in the sandbox; each step passes or fails with what was seen."""
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    host_before = _host_switches(ext)
    directory = tempfile.mkdtemp(prefix="notify-emergency-procedures-")
    result: dict[str, Any] = {"ok": False, "steps": steps}
    app = db = None
    try:
        app, db, handed = _private_app(ext, directory)
        result["copied"] = _copy(ext, app, db)
        box = app.extensions["notify_emergency"]

        def step(name: str, check: Callable[[], tuple[bool, str]]) -> bool:
            try:
                ok, detail = check()
            except Exception as exc:  # a crashing step is a failed step; later ones still run
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            steps.append({"name": name, "ok": ok, "detail": detail})
            return ok

        with app.app_context():
            # the copy carries the real app's switches; the procedures start from a calm system
            box.control.set_mode("normal", actor)
            box.control.write("paused", {}, actor)
            box.breaker.close()
            for event in emergency.list_events(box, status="open", limit=1000):
                emergency.resolve_event(box, event["id"], actor, False)

            def activate() -> tuple[bool, str]:
                event = emergency.activate(box, reason="procedure test", triggered_by=actor, level=1,
                                           source="procedure-test", actor=actor)
                mode = box.control.read("mode")
                return mode == "emergency" and event["status"] == "open", \
                    f"mode '{mode}', event #{event['id']} {event['status']}"

            def fallback_delivery() -> tuple[bool, str]:
                before = len(handed)
                nid = box.dispatcher.send(SANDBOX_USER, "Procedure test", "Fallback delivery works.", "high")
                first = claim_for_user(box, SANDBOX_USER, 10, "flash")
                again = claim_for_user(box, SANDBOX_USER, 10, "flash")
                got = [r["id"] for r in first].count(nid)
                ok = len(handed) == before and got == 1 and not again
                return ok, (f"notification #{nid}: real-time tried {len(handed) - before} time(s), "
                            f"claimed {got} time(s), then {len(again)} more")

            def fallbacks_enabled() -> tuple[bool, str]:
                enable_fallback(box, "flash", actor, "procedure-test")
                shown = enable_fallback(box, "broadcast", actor, "procedure-test")
                paused = bool(box.control.paused().get("realtime"))
                banner = shown.get("banner") or {}
                visible = any(b["id"] == banner.get("id") for b in box.banners())
                return paused and visible, f"real-time paused: {paused}; emergency banner shown: {visible}"

            def recover() -> tuple[bool, str]:
                disable_fallback(box, ("flash", "broadcast"), actor, "procedure-test")
                box.breaker.close()
                paused = bool(box.control.paused().get("realtime"))
                left = [b for b in box.banners() if b["kind"] == "emergency"]
                return not paused and not left and box.breaker.current == "closed", \
                    f"real-time paused: {paused}; emergency banners left: {len(left)}; breaker {box.breaker.current}"

            def deactivate() -> tuple[bool, str]:
                try:
                    out = emergency.deactivate(box, resolved_by=actor, source="procedure-test")
                    how = "health checks passed"
                except emergency.EmergencyError as exc:
                    out = emergency.deactivate(box, resolved_by=actor, force=True, source="procedure-test",
                                               reason="sandbox: its health checks do not describe the real app")
                    how = f"forced ({exc})"
                event = out.get("event") or {}
                return out["mode"] == "normal" and event.get("status") == "resolved", \
                    f"mode '{out['mode']}', event #{event.get('id')} {event.get('status')}; {how}"

            def realtime_again() -> tuple[bool, str]:
                before = len(handed)
                nid = box.dispatcher.send(SANDBOX_USER, "Procedure test", "Real time is back.", "normal")
                row = box.store.get(nid) or {}
                ok = len(handed) == before + 1 and bool(row.get("delivered")) and row.get("channel") == "realtime"
                return ok, f"notification #{nid} delivered={row.get('delivered')} by {row.get('channel')}"

            for name, check in (("activate-emergency", activate), ("fallback-delivery", fallback_delivery),
                                ("enable-fallbacks", fallbacks_enabled), ("recover", recover),
                                ("deactivate-emergency", deactivate), ("realtime-after-recovery", realtime_again)):
                step(name, check)

        def untouched() -> tuple[bool, str]:
            after = _host_switches(ext)
            return after == host_before, ("the real app's mode, paused services, breaker and events are "
                                          "unchanged" if after == host_before else f"changed: {host_before} -> {after}")

        step("real-app-untouched", untouched)
        result["ok"] = all(s["ok"] for s in steps)
    except Exception as exc:  # the sandbox could not be built: say why; nothing real changed
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if app is not None:
            _dismantle(app, db)
        shutil.rmtree(directory, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 2)
    ext.audit.record(actor, "test-emergency-procedures", source, None,
                     outcome="ok" if result["ok"] else "failed",
                     detail=result.get("error") or ", ".join(s["name"] for s in steps if not s["ok"]) or None)
    return result

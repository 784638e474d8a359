"""The extension's own moving parts as "services" an operator can stop, start, restart and
verify across the whole cluster, from any process (the CLI, the dashboard).

* ``realtime``: real-time delivery over Socket.IO. Paused, the dispatcher skips it and every
  notification goes to the flash and polling fallbacks.
* ``monitor``: the background health monitor. Paused, it skips its checks.
* ``replay``: the worker that redelivers the backlog after a recovery. Paused, it waits.

A service is paused by the ``paused`` switch (:meth:`..control.Control.set_paused`): the
database holds it and the shared state spreads it to every worker, so ``stop-services`` in
one shell stops the parts in every process. Operator commands configured in
``NOTIFY_EMERGENCY_SERVICE_COMMANDS`` run alongside: a command named ``stop`` or
``stop-<anything>`` runs on stop, likewise ``start``, ``restart`` and ``verify``.
"""

from __future__ import annotations

import time
from typing import Any

from .actions import run_service_command

#: The extension's services and what pausing each one means.
SERVICES: dict[str, str] = {
    "realtime": "real-time delivery (Socket.IO); paused, notifications go to flash and polling",
    "monitor": "background health monitor; paused, it skips its checks",
    "replay": "backlog replay after recovery; paused, it waits",
}

#: Control key (database only) naming the profile the services were last started with.
PROFILE_KEY = "services_profile"
#: Control key (database only) where the monitor leaves its last tick, if it does.
MONITOR_HEARTBEAT_KEY = "monitor_heartbeat"

ACTIONS = ("stop", "start", "restart", "verify")


class ServiceError(Exception):
    """A service action could not be carried out; the message says why."""


def paused_now(ext: Any) -> dict[str, bool]:
    """Which services are paused, read from the database (the truth)."""
    stored = ext.control.read("paused", {}) or {}
    return {name: bool(stored.get(name)) for name in SERVICES}


def profile(ext: Any) -> str:
    """'emergency' after ``start-services --emergency-mode``, else 'normal'."""
    return str(ext.control.read(PROFILE_KEY, "normal") or "normal")


def _write_paused(ext: Any, changes: dict[str, bool], actor: str) -> dict[str, dict[str, bool]]:
    """Apply several pause changes in ONE switch write, so every worker sees them together."""
    stored = dict(ext.control.read("paused", {}) or {})
    before = {name: bool(stored.get(name)) for name in changes}
    stored.update(changes)
    ext.control.write("paused", stored, actor)
    return {name: {"before": before[name], "after": changes[name]} for name in changes}


def operator_commands(ext: Any, action: str) -> list[str]:
    """Names of configured operator commands that run for ``action``."""
    configured = ext.app.config.get("NOTIFY_EMERGENCY_SERVICE_COMMANDS") or {}
    return sorted(n for n in configured if n == action or n.startswith(action + "-"))


def _run_commands(ext: Any, action: str, actor: str, source: str = "cli") -> list[dict[str, Any]]:
    names = operator_commands(ext, action)
    if not names:
        return []
    results = []
    for name in names:
        try:
            result = dict(run_service_command(ext, name, actor, source))
        except Exception as exc:  # one broken command must not hide the others' results
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result.setdefault("name", name)
        result["ok"] = bool(result.get("ok"))
        results.append(result)
    return results


def _audit(ext: Any, actor: str, action: str, source: str, arguments: dict[str, Any],
           result: dict[str, Any]) -> None:
    failed = [c["name"] for c in result.get("commands", []) if not c["ok"]]
    ext.audit.record(actor, action, source, arguments, outcome="ok" if result["ok"] else "failed",
                     detail=f"operator commands failed: {', '.join(failed)}" if failed else None)


def stop_services(ext: Any, actor: str, source: str = "cli") -> dict[str, Any]:
    """Pause every service cluster-wide, then run the ``stop`` operator commands."""
    changes = _write_paused(ext, {name: True for name in SERVICES}, actor)
    commands = _run_commands(ext, "stop", actor, source)
    result = {"ok": all(c["ok"] for c in commands), "action": "stop", "services": changes,
              "commands": commands, "mode": ext.control.read("mode", "normal") or "normal"}
    _audit(ext, actor, "stop-services", source, {}, result)
    return result


def start_services(ext: Any, actor: str, emergency_mode: bool = False, source: str = "cli") -> dict[str, Any]:
    """Resume the services cluster-wide, then run the ``start`` operator commands.

    With ``emergency_mode`` real-time delivery stays paused (every notification goes to
    the fallbacks) while the monitor and the replay worker run; ``verify-services`` then
    counts the held real-time delivery as intended.
    """
    changes = {name: False for name in SERVICES}
    if emergency_mode:
        changes["realtime"] = True
    ext.control.write(PROFILE_KEY, "emergency" if emergency_mode else "normal", actor)
    services = _write_paused(ext, changes, actor)
    commands = _run_commands(ext, "start", actor, source)
    result = {"ok": all(c["ok"] for c in commands), "action": "start", "services": services,
              "commands": commands, "profile": "emergency" if emergency_mode else "normal",
              "mode": ext.control.read("mode", "normal") or "normal"}
    _audit(ext, actor, "start-services", source, {"emergency_mode": emergency_mode}, result)
    return result


def restart_services(ext: Any, actor: str, source: str = "cli", settle: float = 0.2) -> dict[str, Any]:
    """Pause every service, let workers see it, resume them in the current profile, and run
    the ``restart`` operator commands (or ``stop`` then ``start`` when no ``restart`` one
    is configured)."""
    current = profile(ext)
    _write_paused(ext, {name: True for name in SERVICES}, actor)
    # pub/sub reaches workers in milliseconds; a short pause lets each one observe the stop
    time.sleep(settle)
    changes = {name: False for name in SERVICES}
    if current == "emergency":
        changes["realtime"] = True
    services = _write_paused(ext, changes, actor)
    for info in services.values():
        info["before"] = True
    if operator_commands(ext, "restart"):
        commands = _run_commands(ext, "restart", actor, source)
    else:
        commands = _run_commands(ext, "stop", actor, source) + _run_commands(ext, "start", actor, source)
    result = {"ok": all(c["ok"] for c in commands), "action": "restart", "services": services,
              "commands": commands, "profile": current,
              "mode": ext.control.read("mode", "normal") or "normal"}
    _audit(ext, actor, "restart-services", source, {}, result)
    return result


def _verify_realtime(ext: Any, paused: bool, held: bool) -> dict[str, Any]:
    if ext.notifier is None:
        return {"state": "absent", "ok": True,
                "detail": "no real-time notifier configured; every notification uses the fallbacks"}
    if paused:
        if held:
            return {"state": "held", "ok": True,
                    "detail": "paused on purpose (started with --emergency-mode); fallbacks deliver"}
        return {"state": "paused", "ok": False,
                "detail": "paused: run 'start-services' (or 'disable-fallback --type flash')"}
    breaker = ext.breaker.current
    state_ok = bool(ext.state.healthy)
    detail = f"breaker {breaker}; shared state ({ext.state.backend}) {'healthy' if state_ok else 'unreachable'}"
    return {"state": "running", "ok": state_ok, "detail": detail, "breaker": breaker}


def _verify_monitor(ext: Any, paused: bool) -> dict[str, Any]:
    cfg = ext.app.config
    if not cfg.get("NOTIFY_EMERGENCY_MONITOR_ENABLED", True):
        return {"state": "disabled", "ok": True, "detail": "NOTIFY_EMERGENCY_MONITOR_ENABLED is False"}
    if paused:
        return {"state": "paused", "ok": False, "detail": "paused: run 'start-services'"}
    info: dict[str, Any] = {"state": "running", "ok": True, "detail": "not paused"}
    beat = ext.control.read(MONITOR_HEARTBEAT_KEY)
    at = beat.get("at") if isinstance(beat, dict) else beat
    if isinstance(at, (int, float)):
        age = time.time() - at
        limit = 3 * float(cfg.get("NOTIFY_EMERGENCY_MONITOR_INTERVAL", 15.0))
        info["last_tick_seconds_ago"] = round(age, 1)
        if age > limit:
            info.update(ok=False, state="stale",
                        detail=f"last check {age:.0f}s ago (more than 3 intervals): is any app process running?")
        else:
            info["detail"] = f"last check {age:.0f}s ago"
    return info


def verify_services(ext: Any, actor: str = "verify-services", source: str = "cli") -> dict[str, Any]:
    """Is each service in the state its profile wants? Runs the ``verify`` operator commands."""
    paused = paused_now(ext)
    current = profile(ext)
    services = {
        "realtime": _verify_realtime(ext, paused["realtime"], held=current == "emergency"),
        "monitor": _verify_monitor(ext, paused["monitor"]),
        "replay": ({"state": "paused", "ok": False, "detail": "paused: run 'start-services'"}
                   if paused["replay"] else {"state": "running", "ok": True, "detail": "not paused"}),
    }
    commands = _run_commands(ext, "verify", actor, source)
    ok = all(s["ok"] for s in services.values()) and all(c["ok"] for c in commands)
    return {"ok": ok, "action": "verify", "profile": current, "services": services, "commands": commands,
            "mode": ext.control.read("mode", "normal") or "normal"}

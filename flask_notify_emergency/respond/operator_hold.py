"""The operator's hold: after a person's ``restore``, ``deactivate-emergency`` or
``enable-fallback``, the monitor neither switches emergency mode on nor rolls back for
``NOTIFY_EMERGENCY_OPERATOR_HOLD`` seconds, so automation does not undo what a person just
decided. A failure more severe than the one the operator dealt with (a lower level number)
lifts the hold at once.

The hold is the control key ``operator_hold`` (database): ``{"until", "action", "by",
"level", "at"}``, wall-clock seconds. ``level`` is the level of the emergency open when the
operator acted, else ``MONITOR_ACTIVATE_LEVEL`` (so only a failure that would page harder
than a routine activation lifts it). An operator's own ``activate-emergency`` or
``rollback`` is never held.
"""

from __future__ import annotations

import time
from typing import Any

KEY = "operator_hold"
#: What a held monitor tells people who want it to act now.
UNBLOCK = ("run 'flask emergency activate-emergency' or 'rollback' to act now, or "
           "'flask emergency release-hold' to hand control back to the monitor")


def place(ext: Any, action: str, actor: str, level: int | None = None) -> dict[str, Any]:
    """Hold the automation off for ``OPERATOR_HOLD`` seconds after ``action`` by ``actor``."""
    if level is None:
        level = int(ext.app.config["NOTIFY_EMERGENCY_MONITOR_ACTIVATE_LEVEL"])
    now = time.time()
    hold = {"until": now + float(ext.app.config["NOTIFY_EMERGENCY_OPERATOR_HOLD"]), "action": action,
            "by": actor, "level": int(level), "at": now}
    ext.control.write(KEY, hold, actor)
    return hold


def current(ext: Any) -> dict[str, Any] | None:
    """The hold in force now (with ``remaining_seconds``), or None."""
    hold = ext.control.read(KEY)
    if not isinstance(hold, dict) or float(hold.get("until") or 0) <= time.time():
        return None
    return dict(hold, remaining_seconds=round(float(hold["until"]) - time.time(), 1))


def holding(ext: Any, level: int) -> dict[str, Any] | None:
    """The hold that keeps the monitor from acting on a level-``level`` finding, or None
    (no hold, or the finding is more severe than what the operator dealt with)."""
    hold = current(ext)
    if hold is None or level < int(hold.get("level") or 1):
        return None
    return hold


def release(ext: Any, actor: str) -> dict[str, Any] | None:
    """End the hold now; return the one that was in force (None: there was none)."""
    hold = current(ext)
    ext.control.write(KEY, None, actor)
    return hold


def describe(hold: dict[str, Any]) -> str:
    """One line: who holds the automation off, why, for how long, and how to lift it."""
    return (f"operator hold after '{hold['action']}' by {hold['by']}, {hold['remaining_seconds']:.0f}s left; only a "
            f"failure more severe than level {hold['level']} overrides it: {UNBLOCK}")

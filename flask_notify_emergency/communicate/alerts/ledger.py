"""The alert ledger: which alert went out when, so the same one is not sent again within
``NOTIFY_EMERGENCY_ALERT_COOLDOWN`` (no alert storm).

Keys are per event and kind (``event:12:detected``, ``event:12:escalated``...); a
"detected" alert also claims ``type:<failure_type>:detected`` so that a second event of the
same type opened while the first is still open (two workers racing, say) is grouped into
the first one's alert instead of paging everyone twice. A re-opened emergency after a
"resolved" alert is news, and is sent.

The ledger lives in the control table (key ``alert_ledger``), so every process (workers,
the CLI) shares it; when the database is down it falls back to this process's memory
rather than stay silent.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

KEY = "alert_ledger"
_lock = threading.Lock()


def _memory(ext: Any) -> dict[str, dict[str, Any]]:
    with _lock:
        ledger = getattr(ext, "alert_ledger", None)
        if ledger is None:
            ledger = {}
            ext.alert_ledger = ledger
        return ledger


def claim(ext: Any, keys: list[str], event_id: int | None, still_open: Callable[[int], bool]) -> tuple[bool, str | None]:
    """May an alert under ``keys`` go out now? If so, record it. Returns (send, why not)."""
    cooldown = float(ext.app.config["NOTIFY_EMERGENCY_ALERT_COOLDOWN"])
    now = time.time()
    memory = _memory(ext)
    try:
        stored = dict(ext.control.read(KEY, {}) or {})
        durable = True
    except Exception:  # database down: alert anyway, deduplicated within this process
        stored, durable = {}, False
    merged = {**stored, **{k: v for k, v in memory.items() if k not in stored or v["at"] > stored[k]["at"]}}
    for key in keys:
        entry = merged.get(key)
        if entry is None or now - entry["at"] >= cooldown:
            continue
        if key.startswith("type:") and entry.get("event_id") not in (None, event_id):
            other = entry["event_id"]
            if not still_open(other):
                continue  # the earlier event is over: this is a new emergency
            why = f"grouped with the alert for open event #{other}"
        else:
            why = f"already sent {now - entry['at']:.0f}s ago (cooldown {cooldown:g}s)"
        entry["suppressed"] = int(entry.get("suppressed", 0)) + 1
        _save(ext, merged, durable, now, cooldown)
        return False, why
    for key in keys:
        merged[key] = {"at": now, "event_id": event_id, "suppressed": 0}
        memory[key] = merged[key]
    _save(ext, merged, durable, now, cooldown)
    return True, None


def _save(ext: Any, ledger: dict[str, Any], durable: bool, now: float, cooldown: float) -> None:
    fresh = {k: v for k, v in ledger.items() if now - v["at"] < max(cooldown, 60.0) * 2}
    memory = _memory(ext)
    with _lock:
        memory.clear()
        memory.update(fresh)
    if durable:
        try:
            ext.control.write(KEY, fresh, "alerts")
        except Exception:  # the memory copy still prevents repeats from this process
            pass

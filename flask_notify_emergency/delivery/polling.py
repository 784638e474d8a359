"""How often the client script polls: the server decides, so it can slow a crowd down.

The poll reply (and the banners reply, and the page's settings) carry ``poll_interval``:
``POLL_INTERVAL`` raised by ``POLL_BACKOFF_FACTOR`` once in emergency or legacy mode (when
every page polls) and once more for each monitor check in a row that found the system
overloaded (the cached control key ``load``, written by the monitor), never above
``POLL_INTERVAL_MAX``. The poll reply also carries ``poll_phase``: where in its jitter
window the page's next poll falls, from a low-discrepancy (golden ratio) sequence over this
worker's replies, so a crowd that polled at once is spread evenly over the next interval
instead of by chance. The client script (``static/client.js``, ``pollDelay``) adds the jitter
and follows both.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

#: Control key (cached in every worker) the monitor writes: ``{"overloaded": bool, "streak": n}``.
LOAD_KEY = "load"
#: 1/golden ratio: successive multiples modulo 1 are as evenly spread as a sequence can be.
_GOLDEN = 0.6180339887498949
_counter = itertools.count()
_counter_lock = threading.Lock()


def backoff_steps(mode: str, load: Any) -> int:
    """How many times the interval is raised: once for a mode in which every page polls, and
    once per overloaded monitor check in a row."""
    steps = 0 if mode == "normal" else 1
    if isinstance(load, dict) and load.get("overloaded"):
        streak = load.get("streak")
        steps += max(1, int(streak)) if isinstance(streak, int) and not isinstance(streak, bool) else 1
    return steps


def interval_for(config: Any, mode: str, load: Any) -> float:
    """Seconds between polls the server asks for, given the mode and the monitor's load finding."""
    base = float(config["NOTIFY_EMERGENCY_POLL_INTERVAL"])
    ceiling = max(base, float(config["NOTIFY_EMERGENCY_POLL_INTERVAL_MAX"]))
    factor = float(config["NOTIFY_EMERGENCY_POLL_BACKOFF_FACTOR"])
    steps = min(backoff_steps(mode, load), 64)
    return round(min(ceiling, base * factor ** steps), 3)


def poll_interval(ext: Any) -> float:
    """The interval for this moment, from the worker's cached mode and load (no database read)."""
    try:
        load = ext.state.get(LOAD_KEY)
    except Exception:  # the cache is the truth's copy; without it, the mode alone decides
        load = None
    return interval_for(ext.app.config, ext.control.mode, load)


def poll_phase() -> float:
    """The next value in [0, 1) of this worker's golden-ratio sequence."""
    with _counter_lock:
        n = next(_counter)
    return round((n * _GOLDEN) % 1.0, 6)

"""Circuit breaker around the primary (real-time) notifier, with cluster-wide state.

It trips on a failure *rate* over at least ``BREAKER_MIN_CALLS`` calls (never on a tiny
sample), lets exactly ``BREAKER_PROBES`` calls through when half-open (a shared counter, so
a burst cannot slip past), and closes after ``BREAKER_CLOSE_AFTER`` successful probes.
Its state lives in :mod:`..state`, so every worker sees the same breaker.
"""

from __future__ import annotations

import time
from typing import Any, Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)
KEY = "breaker"


class CircuitBreaker:
    """Decides whether the primary path may be tried, and learns from each outcome."""

    def __init__(self, state: Any, config: dict[str, Any],
                 on_change: Callable[[str, str], None] | None = None,
                 write: Callable[[str, Any], None] | None = None) -> None:
        self.state = state
        #: stores a new breaker state (default: the shared state only; the extension also
        #: writes it to the database so a worker started later sees it)
        self.write = write or state.set
        self.failure_rate = config["NOTIFY_EMERGENCY_BREAKER_FAILURE_RATE"]
        self.min_calls = config["NOTIFY_EMERGENCY_BREAKER_MIN_CALLS"]
        self.window = config["NOTIFY_EMERGENCY_BREAKER_WINDOW"]
        self.open_seconds = config["NOTIFY_EMERGENCY_BREAKER_OPEN_SECONDS"]
        self.probes = config["NOTIFY_EMERGENCY_BREAKER_PROBES"]
        self.close_after = config["NOTIFY_EMERGENCY_BREAKER_CLOSE_AFTER"]
        self.on_change = on_change

    def snapshot(self) -> dict[str, Any]:
        return dict(self.state.get(KEY) or {"state": CLOSED, "opened_at": None})

    @property
    def current(self) -> str:
        snap = self.snapshot()
        if snap["state"] == OPEN and time.time() - (snap["opened_at"] or 0) >= self.open_seconds:
            return HALF_OPEN
        return str(snap["state"])

    def allow(self) -> bool:
        """May the primary path be tried now? Half-open admits a fixed number of probes."""
        current = self.current
        if current == CLOSED:
            return True
        if current == OPEN:
            return False
        if self.snapshot()["state"] == OPEN:
            # no counter reset here: racing callers would each reset it and let a burst
            # through; trip() zeroed the counters when the breaker opened
            self._set(HALF_OPEN, reset=False)
        return self.state.incr("breaker-probes", self.open_seconds * 4) <= self.probes

    def record_success(self, n: int = 1) -> None:
        """``n`` calls of the primary path succeeded (a batch of acknowledgements counts once
        per notification, in one write)."""
        if n < 1:
            return
        current = self.current
        if current == HALF_OPEN:
            for _ in range(n):
                if self.state.incr("breaker-successes", self.open_seconds * 4) >= self.close_after:
                    self.close()
                    return
            return
        if current == CLOSED:
            self.state.record_successes(n, self.window)

    def record_failure(self) -> None:
        current = self.current
        if current == HALF_OPEN:
            self.trip()
            return
        if current != CLOSED:
            return
        good, bad = self.state.record_outcome(False, self.window)
        total = good + bad
        if total >= self.min_calls and bad / total >= self.failure_rate:
            self.trip()

    def trip(self) -> None:
        """Open the breaker (also a manual action)."""
        self._set(OPEN, opened_at=time.time())

    def half_open(self) -> None:
        """Let probes through now (a recovery action)."""
        self._set(HALF_OPEN, opened_at=time.time() - self.open_seconds)

    def close(self) -> None:
        self._set(CLOSED)
        self.state.clear_outcomes()

    def _set(self, new: str, opened_at: float | None = None, reset: bool = True) -> None:
        old = self.snapshot()["state"]
        if reset:
            self.state.reset_counter("breaker-probes")
            self.state.reset_counter("breaker-successes")
        self.write(KEY, {"state": new, "opened_at": opened_at})
        if old != new and self.on_change:
            self.on_change(old, new)

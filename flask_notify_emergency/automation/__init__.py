"""What runs by itself: the background monitor (one per cluster: checks, classifies, opens and
escalates events, alerts, recovers, rolls back when configured, leaves emergency mode after
healthy checks), the recovery plans with their retries and escalation, the recovery probes of
``test-recovery``, and what starts background work in each worker.

Uses every phase below it: :mod:`..rollback`, :mod:`..communicate`, :mod:`..respond`,
:mod:`..detect`, :mod:`..delivery`.
"""

from __future__ import annotations

from . import monitor, recovery
from .monitor import heartbeat_status, pending_detection, watchdog
from .recovery import auto_recover
from .recovery_probe import probe_database, run_recovery_probes
from .startup import WorkerStart

__all__ = [
    "auto_recover", "heartbeat_status", "monitor", "pending_detection", "probe_database", "recovery",
    "run_recovery_probes",
    "watchdog", "WorkerStart",
]

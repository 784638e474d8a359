"""The response's tools: emergency events and emergency mode (:mod:`.emergency`), the fallback
switches, the recovery actions (restart the real-time layer, clear sessions, reconnect, half-open
the breaker, operator commands), the backlog (clear queues, replay), cluster-wide actions every
worker runs on itself, service pause and start, and the workers' mode reports.

Uses :mod:`..detect` (levels, health checks, the canary), :mod:`..delivery` and the shared
top-level modules.
"""

from __future__ import annotations

from . import cluster_actions, drill_faults, drill_lease, emergency, operator_hold, services, worker_mode
from .actions import (
    RecoveryError,
    audit_action,
    clear_sessions,
    half_open_breaker,
    reconnect_database,
    reconnect_redis,
    restart_websockets,
    run_service_command,
)
from .backlog import clear_queues, replay_backlog
from .emergency import (
    EmergencyError,
    activate,
    current_event,
    deactivate,
    get_event,
    list_events,
    open_event,
    record_action,
)
from .fallback_control import (
    KINDS,
    FallbackTestError,
    disable_fallback,
    enable_fallback,
    post_banner,
    run_fallback_test,
)
from .services import paused_now, profile, verify_services
from .worker_mode import check_workers, worker_reports

__all__ = [
    "activate", "audit_action", "check_workers", "clear_queues", "clear_sessions",
    "cluster_actions", "current_event", "drill_faults", "drill_lease", "deactivate", "disable_fallback", "emergency",
    "EmergencyError", "enable_fallback", "FallbackTestError", "get_event", "half_open_breaker",
    "KINDS", "list_events", "open_event", "operator_hold", "paused_now", "post_banner", "profile",
    "reconnect_database", "reconnect_redis", "record_action", "RecoveryError", "replay_backlog",
    "restart_websockets", "run_fallback_test", "run_service_command", "services", "verify_services",
    "worker_mode", "worker_reports",
]

"""Detection and assessment: the health checks (realtime with an end-to-end canary through
the message queue, database, sessions, redis, resources), the canary itself, the evidence of
when a failure started (:mod:`.evidence`, for MTTD), and the
classification of a failing report into a failure type and one of the runbook's four levels
(:mod:`.levels`), by evidence, never by the text of an error; and whether the database has
every table and column of the extension (:mod:`.schema`).

Uses the shared top-level modules and :mod:`..delivery` (delivery statistics, the notifier's
events).
"""

from __future__ import annotations

from . import evidence, health, realtime_probe
from .canary import check_message_queue, listener_hears, queue_answers, queue_manager, send_canary
from .classify import Classification, classify
from .evidence import FAILED_CHECK, EvidenceLog, utc_from_epoch
from .health import RATES_SINCE_KEY, HealthReport, run_health_checks
from .levels import FAILURE_TYPES, LEVELS, Level, parse_level
from .schema import SchemaReport, schema_problems

__all__ = [
    "check_message_queue", "Classification", "classify", "evidence", "EvidenceLog", "FAILED_CHECK",
    "FAILURE_TYPES", "health", "HealthReport", "Level", "LEVELS", "listener_hears", "parse_level",
    "queue_answers", "queue_manager", "RATES_SINCE_KEY", "realtime_probe", "run_health_checks", "SchemaReport", "schema_problems",
    "send_canary", "utc_from_epoch",
]

"""Readiness and learning: drills that inject real faults and their evaluation, the procedure
sandbox (the runbook's procedures on a throwaway copy), recovery validation, and the numbers:
dashboard metrics (:mod:`.metrics`), KPI reports (MTTD, MTTR, recovery and rollback success)
and the team status report.

Uses every phase below it.
"""

from __future__ import annotations

from . import kpi_report, metrics, prometheus, status_report
from .drill_evaluation import evaluate_drill
from .drills import CHOICES as DRILL_CHOICES
from .drills import DRILL_TYPES, MAX_DURATION, DrillError, execute_drill, get_drill, parse_participants
from .metrics import run_health
from .procedure_sandbox import run_procedure_tests
from .recovery_validation import validate_recovery

__all__ = [
    "DRILL_CHOICES", "DRILL_TYPES", "DrillError", "evaluate_drill", "execute_drill", "get_drill", "kpi_report",
    "MAX_DURATION", "metrics", "parse_participants", "prometheus", "run_health", "run_procedure_tests",
    "status_report", "validate_recovery",
]

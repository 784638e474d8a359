"""Health endpoints: the full report for admins, and minimal probes for load balancers.

``<prefix>/livez`` answers 200 while the process serves requests (it touches nothing else),
``<prefix>/readyz`` answers 200 when the database answers within the health-check timeout
and 503 otherwise. Both are unauthenticated and say nothing about the system beyond that;
the details are at ``<prefix>/api/health``, for admins only.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify

from ..access import admin_required
from ..detect import run_health_checks

_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify-emergency-ready")


def register(bp: Blueprint, ext_state: Any) -> None:
    @bp.route("/livez")
    def livez() -> Any:
        """Liveness: the worker answers."""
        return jsonify(status="alive")

    @bp.route("/readyz")
    def readyz() -> Any:
        """Readiness: the database, where every notification is stored first, answers."""
        def select_one() -> None:
            with ext_state.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        timeout = current_app.config["NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT"]
        try:
            _pool.submit(select_one).result(timeout=timeout)
        except Exception:  # unreachable, refused or too slow: not ready, and no details
            return jsonify(status="not ready"), 503
        return jsonify(status="ready")

    @bp.route("/api/health")
    @admin_required
    def api_health() -> Any:
        """Every check's result, the overall status and the health score (admins)."""
        report = run_health_checks(ext_state).to_dict()
        return jsonify(report), 200 if report["status"] != "critical" else 503

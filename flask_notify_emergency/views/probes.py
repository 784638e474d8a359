"""Health endpoints: the full report for admins, and minimal probes for load balancers.

``<prefix>/livez`` answers 200 while the process serves requests (it touches nothing else),
``<prefix>/readyz`` answers 200 when the database answers within the health-check timeout
and 503 otherwise, with the age of the cluster monitor's heartbeat; with
``READYZ_REQUIRE_MONITOR`` it is also 503 while no monitor has beaten for three intervals
(a target for an outside uptime check: the dead man's switch seen from outside). With
``NOTIFY_EMERGENCY_READYZ_STRICT`` the readiness probe also needs every table and column of
the extension (a deploy whose migrations have not run is not ready), and its 503 names what
is missing and the command that fixes it: the extension's own schema, nothing of the host's.
Both are unauthenticated and say nothing else about the system; the details are at
``<prefix>/api/health``, for admins only.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify

from ..access import admin_required
from ..automation import heartbeat_status
from ..detect import SchemaReport, run_health_checks, schema_problems

_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify-emergency-ready")


def register(bp: Blueprint, ext_state: Any) -> None:
    @bp.route("/livez")
    def livez() -> Any:
        """Liveness: the worker answers."""
        return jsonify(status="alive")

    @bp.route("/readyz")
    def readyz() -> Any:
        """Readiness: the database, where every notification is stored first, answers."""
        strict = current_app.config["NOTIFY_EMERGENCY_READYZ_STRICT"]
        app = current_app._get_current_object()  # type: ignore[attr-defined]

        def select_one() -> SchemaReport | None:
            with ext_state.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            if not strict:
                return None
            return schema_problems(app, ext_state.engine, [m.__table__ for m in ext_state.models.all])

        timeout = current_app.config["NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT"]
        try:
            found = _pool.submit(select_one).result(timeout=timeout)
            monitor = _pool.submit(heartbeat_status, ext_state).result(timeout=timeout)
        except Exception:  # unreachable, refused or too slow: not ready, and no details
            return jsonify(status="not ready"), 503
        body: dict[str, Any] = {"monitor": monitor["state"], "monitor_age_seconds": monitor["age_seconds"]}
        if found is not None and not found.ok:
            return jsonify(status="not ready", schema=found.to_dict(), **body), 503
        if current_app.config["NOTIFY_EMERGENCY_READYZ_REQUIRE_MONITOR"] and monitor["state"] != "fresh":
            return jsonify(status="not ready", **body), 503
        return jsonify(status="ready", **body)

    @bp.route("/api/health")
    @admin_required
    def api_health() -> Any:
        """Every check's result, the overall status and the health score (admins)."""
        report = run_health_checks(ext_state).to_dict()
        return jsonify(report), 200 if report["status"] != "critical" else 503

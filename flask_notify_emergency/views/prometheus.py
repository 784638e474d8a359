"""``GET <prefix>/metrics``: the Prometheus metrics (:mod:`..learn.prometheus`).

Prometheus scrapes with ``Authorization: Bearer <NOTIFY_EMERGENCY_METRICS_TOKEN>``; an admin
may also open it in the browser. Anyone else gets 401 (with ``WWW-Authenticate: Bearer``, the
answer a scraper understands, rather than a login page) or 403.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..access import current_user_id, is_admin
from ..learn import prometheus


def _bearer_ok() -> bool:
    token = current_app.config["NOTIFY_EMERGENCY_METRICS_TOKEN"]
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                               str(token).encode())


def register(bp: Blueprint, ext_state: Any) -> None:
    @bp.route("/metrics")
    def metrics() -> Any:
        """The metrics in Prometheus' text format (OpenMetrics when the scraper asks for it)."""
        if not _bearer_ok():
            if current_user_id() is None:
                response = jsonify(error="a bearer token (NOTIFY_EMERGENCY_METRICS_TOKEN) or an admin's "
                                         "session is required")
                response.status_code = 401
                response.headers["WWW-Authenticate"] = 'Bearer realm="notify-emergency metrics"'
                return response
            if not is_admin():
                return jsonify(error="admins only"), 403
        if ext_state.prometheus is None:
            return jsonify(error=prometheus.MISSING), 501
        body, content_type = prometheus.render(ext_state, request.headers.get("Accept"))
        return Response(body, content_type=content_type)

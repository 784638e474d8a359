"""The public status page: a tiny HTML page and its JSON, for everyone (no login).

Visitors come in numbers exactly when things break, so the status is kept in the process
until it changes (``update-status-page`` bumps ``banners_version``, which every worker
hears of) or for a few seconds at most; the last known one is served if the database does
not answer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint, jsonify, render_template

from ..communicate import public_status, public_view

CACHE_SECONDS = 5.0


def register(bp: Blueprint, ext_state: Any) -> None:
    """Add ``<prefix>/status-page`` (HTML) and ``<prefix>/api/status-page`` (JSON)."""
    lock = threading.Lock()
    cached: dict[str, Any] = {"value": None, "at": 0.0, "version": None}

    def current() -> dict[str, Any] | None:
        version = ext_state.state.get("banners_version")
        with lock:
            if cached["value"] is not None and cached["version"] == version \
                    and time.monotonic() - cached["at"] < CACHE_SECONDS:
                return dict(cached["value"])
        try:
            value = public_view(public_status(ext_state))
        except Exception as exc:  # the database may be what is down: say what we last knew
            ext_state.app.logger.warning("flask-notify-emergency: status page could not read the status: %s", exc)
            with lock:
                return dict(cached["value"], stale=True) if cached["value"] is not None else None
        with lock:
            cached["value"], cached["at"], cached["version"] = value, time.monotonic(), version
        return dict(value)

    @bp.route("/status-page")
    def status_page() -> Any:
        """The public status, as a page anyone can open."""
        value = current()
        body = render_template("notify_emergency/status_page.html", status=value)
        response = ext_state.app.make_response((body, 200 if value is not None else 503))
        response.headers["Cache-Control"] = f"public, max-age={int(CACHE_SECONDS)}"
        return response

    @bp.route("/api/status-page")
    def status_page_json() -> Any:
        """The public status as JSON: status, label, message, updated_at."""
        value = current()
        if value is None:
            response = jsonify(status="unknown", label="Unknown", message=None, updated_at=None)
            response.status_code = 503
        else:
            response = jsonify(value)
        response.headers["Cache-Control"] = f"public, max-age={int(CACHE_SECONDS)}"
        return response

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

from flask import Blueprint, jsonify, render_template, url_for

from ..communicate import public_status, public_view, translated_view
from ..delivery import i18n

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
        shown = translated_view(value) if value is not None else None
        body = render_template("notify_emergency/status_page.html", status=shown,
                               status_url=url_for(f"{ext_state.blueprint_name}.status_page_json"))
        response = ext_state.app.make_response((body, 200 if value is not None else 503))
        response.headers["Cache-Control"] = f"public, max-age={int(CACHE_SECONDS)}"
        if i18n.current_locale() is not None:  # the host picks the language from the request
            response.vary.update(("Accept-Language", "Cookie"))
        return response

    @bp.route("/api/status-page")
    def status_page_json() -> Any:
        """The public status as JSON: status, label, message, updated_at."""
        value = current()
        if value is None:
            response = jsonify(status="unknown", label=i18n.gettext("Status unknown"), message=None, updated_at=None)
            response.status_code = 503
        else:
            response = jsonify(translated_view(value))
        response.headers["Cache-Control"] = f"public, max-age={int(CACHE_SECONDS)}"
        if i18n.current_locale() is not None:  # the host picks the language from the request
            response.vary.update(("Accept-Language", "Cookie"))
        return response

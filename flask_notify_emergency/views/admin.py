"""The dashboard's HTML pages: overview, events, an event, notifications, settings.

Pages are rendered on the server, complete, so the dashboard works with JavaScript off and
with the Socket.IO path down; ``static/dashboard.js`` then keeps them current (live over
the admin namespace, or by polling the JSON API). Every template extends
``NOTIFY_EMERGENCY_BASE_TEMPLATE`` and can be overridden by name.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from ..access import admin_required
from ..config import BY_NAME, PREFIX
from ..respond import get_event
from . import admin_queries as queries
from .admin_pages import format_ms, format_percent, format_seconds, overview_context, render_error, render_page


def register(bp: Blueprint, ext_state: Any) -> None:
    """Add the HTML pages to the blueprint (their forms are in :mod:`.admin_forms`)."""
    bp.add_app_template_filter(format_percent, "ne_percent")
    bp.add_app_template_filter(format_seconds, "ne_seconds")
    bp.add_app_template_filter(format_ms, "ne_ms")

    @bp.route("/")
    @admin_required
    def overview() -> Any:
        """Metrics, the current emergency, and the buttons an operator needs first."""
        return render_page("notify_emergency/overview.html", "overview",
                           **overview_context(request.args.get("window")))

    @bp.route("/events")
    @admin_required
    def events() -> Any:
        page = queries.events_page(ext_state, request.args)
        return render_page("notify_emergency/events.html", "events", result=page,
                           status_filter=request.args.get("status") or "")

    @bp.route("/events/<int:event_id>")
    @admin_required
    def event(event_id: int) -> Any:
        found = get_event(ext_state, event_id)
        if found is None:
            return render_error(f"There is no emergency event #{event_id}.", 404)
        return render_page("notify_emergency/event.html", "events", event=found,
                           audit=queries.event_audit(ext_state, event_id))

    @bp.route("/notifications")
    @admin_required
    def notifications() -> Any:
        page, filters = queries.notifications_page(ext_state, request.args)
        count, oldest = ext_state.store.backlog()
        return render_page("notify_emergency/notifications.html", "notifications", result=page,
                           filters=filters, backlog_count=count, backlog_oldest=oldest,
                           states=queries.NOTIFICATION_STATES, channels=queries.NOTIFICATION_CHANNELS)

    @bp.route("/settings")
    @admin_required
    def settings() -> Any:
        docs = {PREFIX + name: s.doc for name, s in BY_NAME.items()}
        return render_page("notify_emergency/settings.html", "settings",
                           settings=queries.settings_view(current_app.config), docs=docs)

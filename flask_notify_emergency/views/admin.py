"""The dashboard's HTML pages: overview, events, an event, notifications, settings.

Pages are rendered on the server, complete, so the dashboard works with JavaScript off and
with the Socket.IO path down; ``static/dashboard.js`` then keeps them current (live over
the admin namespace, or by polling the JSON API). Every template extends
``NOTIFY_EMERGENCY_BASE_TEMPLATE`` and can be overridden by name.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template, request, url_for

from ..learn import metrics
from ..access import admin_required, csrf_token
from ..config import BANNER_LEVELS
from ..respond.emergency import LEVELS, get_event
from . import admin_queries as queries

#: (endpoint, label) of the dashboard's navigation.
NAV = (("overview", "Overview"), ("events", "Events"), ("notifications", "Notifications"),
       ("banners_page", "Banners"), ("rollback_page", "Rollback"), ("settings", "Settings"))


def format_percent(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:.1f}%"


def format_seconds(value: Any) -> str:
    """Seconds as '42 s', '3.5 min' or '2.1 h'."""
    if value is None:
        return "–"
    value = float(value)
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def format_ms(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1f} ms"


def dashboard_settings(page: str, window: str | None = None) -> dict[str, Any]:
    """The JSON the dashboard script reads: URLs, namespace, refresh period, CSRF token."""
    ext = current_app.extensions["notify_emergency"]
    cfg = current_app.config
    bp = ext.blueprint_name
    return {
        "page": page,
        "window": window or metrics.DEFAULT_WINDOW,
        "overviewUrl": url_for(f"{bp}.api_overview"),
        "rollbackStatusUrl": url_for(f"{bp}.api_rollback_status"),
        "eventUrl": url_for(f"{bp}.event", event_id=0)[:-1],
        "namespace": cfg["NOTIFY_EMERGENCY_ADMIN_NAMESPACE"],
        "socket": ext.socketio is not None,
        "refreshSeconds": cfg.get("NOTIFY_EMERGENCY_DASHBOARD_REFRESH_SECONDS", 5.0),
        "csrfToken": csrf_token(),
    }


def render_page(template: str, page: str, http_status: int = 200, **context: Any) -> Any:
    """Render a dashboard page with what every page needs."""
    ext = current_app.extensions["notify_emergency"]
    context.setdefault("window", None)
    html = render_template(
        template,
        base_template=current_app.config["NOTIFY_EMERGENCY_BASE_TEMPLATE"],
        bp=ext.blueprint_name,
        nav=NAV,
        page=page,
        csrf_token=csrf_token(),
        dashboard_settings=dashboard_settings(page, context["window"]),
        mode=ext.control.mode,
        paused=ext.control.paused(),
        breaker=ext.breaker.current,
        levels=LEVELS,
        banner_levels=BANNER_LEVELS,
        **context,
    )
    return html, http_status


def render_error(message: str, status: int) -> Any:
    return render_page("notify_emergency/error.html", "error", status, message=message)


def overview_context(window_name: str | None) -> dict[str, Any]:
    ext = current_app.extensions["notify_emergency"]
    try:
        window = metrics.parse_window(window_name)
    except ValueError as exc:
        raise queries.QueryError(str(exc)) from None
    data = metrics.overview(ext, window)
    audit = queries.recent_audit(ext) if data["database"]["ok"] else []
    return {"data": data, "window": window.name, "windows": list(metrics.WINDOWS), "recent_audit": audit}


def register(bp: Blueprint, ext_state: Any) -> None:
    """Add the HTML pages (and, through :mod:`.admin_forms`, their forms) to the blueprint."""
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
        from ..config import BY_NAME, PREFIX

        docs = {PREFIX + name: s.doc for name, s in BY_NAME.items()}
        return render_page("notify_emergency/settings.html", "settings",
                           settings=queries.settings_view(current_app.config), docs=docs)

    from . import admin_forms

    admin_forms.register(bp, ext_state)

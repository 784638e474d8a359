"""What every dashboard page is rendered with: navigation, number formats, the settings the
dashboard script reads, the page and error renderers, and the overview's data (shared by the
HTML pages, the forms, the JSON API and the live admin namespace)."""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template, url_for

from ..access import csrf_token
from ..config import BANNER_LEVELS
from ..detect import LEVELS
from ..learn import metrics
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


def overview_payload(ext_state: Any, window: metrics.Window) -> dict[str, Any]:
    """The overview's JSON: every metric of the window plus the newest audit entries."""
    data = metrics.overview(ext_state, window)
    data["recent_audit"] = queries.recent_audit(ext_state) if data["database"]["ok"] else []
    return data

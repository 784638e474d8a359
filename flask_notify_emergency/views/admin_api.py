"""The dashboard's JSON API: the data behind every page, and every action as a POST.

Everything here is admins only (anonymous -> 401, others -> 403) and every POST needs the
page's CSRF token (header ``X-CSRF-Token``, form field or JSON key ``csrf_token``).
Answers: ``{"ok": true, "message": ..., ...}`` on success, ``{"ok": false, "error": ...}``
with 400 on bad input (nothing changed) or 501 when a service is not installed.
"""

from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, current_app, jsonify, request

from ..access import admin_required
from ..learn import metrics
from ..respond import get_event
from . import admin_actions as actions
from . import admin_queries as queries
from .admin_pages import overview_payload, render_error


def form_data() -> dict[str, Any]:
    """The POST's fields, from a JSON object or a form."""
    data = request.get_json(silent=True) if request.is_json else None
    if isinstance(data, dict):
        return data
    return request.form.to_dict()


def error(message: str, status: int = 400) -> Any:
    return jsonify(ok=False, error=message), status


def answer(ext_state: Any, name: str, action: Callable[..., actions.ActionResult], *args: Any) -> Any:
    """Run an action and answer with what happened."""
    try:
        result = actions.perform(ext_state, name, action, *args)
    except actions.ActionError as exc:
        return error(str(exc), exc.status)
    return jsonify(ok=True, message=result.message, category=result.category, **result.data)


def register(bp: Blueprint, ext_state: Any) -> None:
    """Add the API routes to the extension's blueprint."""

    @bp.errorhandler(queries.QueryError)
    def bad_query(exc: queries.QueryError) -> Any:
        if request.path.startswith(current_app.config["NOTIFY_EMERGENCY_URL_PREFIX"] + "/api/"):
            return error(str(exc))
        return render_error(str(exc), 400)

    # -- reads ---------------------------------------------------------------------------
    @bp.route("/api/overview")
    @admin_required
    def api_overview() -> Any:
        """Every overview metric for ``?window=1h|24h|7d|30d``."""
        try:
            window = metrics.parse_window(request.args.get("window"))
        except ValueError as exc:
            return error(str(exc))
        return jsonify(overview_payload(ext_state, window))

    @bp.route("/api/events")
    @admin_required
    def api_events() -> Any:
        page = queries.events_page(ext_state, request.args)
        return jsonify(page.to_dict(status=request.args.get("status") or None))

    @bp.route("/api/events/<int:event_id>")
    @admin_required
    def api_event(event_id: int) -> Any:
        event = get_event(ext_state, event_id)
        if event is None:
            return error(f"no emergency event #{event_id}.", 404)
        return jsonify(event=event, audit=queries.event_audit(ext_state, event_id))

    @bp.route("/api/notifications")
    @admin_required
    def api_notifications() -> Any:
        page, filters = queries.notifications_page(ext_state, request.args)
        return jsonify(page.to_dict(**filters))

    @bp.route("/api/banners/admin")
    @admin_required
    def api_banners_admin() -> Any:
        return jsonify(banners=queries.banners_admin(ext_state))

    @bp.route("/api/rollback/status")
    @admin_required
    def api_rollback_status() -> Any:
        return jsonify(actions.rollback_status(ext_state))

    @bp.route("/api/settings")
    @admin_required
    def api_settings() -> Any:
        return jsonify(settings=queries.settings_view(current_app.config))

    @bp.route("/api/audit")
    @admin_required
    def api_audit() -> Any:
        limit = queries.int_arg(request.args, "limit", 50, 1, 500)
        return jsonify(items=queries.recent_audit(ext_state, limit))

    # -- actions -------------------------------------------------------------------------
    @bp.route("/api/emergency/activate", methods=["POST"])
    @admin_required
    def api_activate() -> Any:
        return answer(ext_state, "activate-emergency", actions.activate, form_data())

    @bp.route("/api/emergency/deactivate", methods=["POST"])
    @admin_required
    def api_deactivate() -> Any:
        return answer(ext_state, "deactivate-emergency", actions.deactivate, form_data())

    @bp.route("/api/fallback", methods=["POST"])
    @admin_required
    def api_fallback() -> Any:
        return answer(ext_state, "enable-fallback", actions.set_fallback, form_data())

    @bp.route("/api/banners/admin", methods=["POST"])
    @admin_required
    def api_banner_create() -> Any:
        return answer(ext_state, "post-banner", actions.post_banner, form_data())

    @bp.route("/api/banners/admin/<int:banner_id>/dismiss", methods=["POST"])
    @admin_required
    def api_banner_dismiss(banner_id: int) -> Any:
        return answer(ext_state, "dismiss-banner", actions.dismiss_banner, banner_id)

    @bp.route("/api/health/run", methods=["POST"])
    @admin_required
    def api_health_run() -> Any:
        return answer(ext_state, "health-check", actions.run_health_check, form_data())

    @bp.route("/api/recovery/auto", methods=["POST"])
    @admin_required
    def api_auto_recover() -> Any:
        return answer(ext_state, "auto-recover", actions.auto_recover, form_data())

    @bp.route("/api/rollback", methods=["POST"])
    @admin_required
    def api_rollback() -> Any:
        return answer(ext_state, "rollback", actions.rollback, form_data())

    @bp.route("/api/restore", methods=["POST"])
    @admin_required
    def api_restore() -> Any:
        return answer(ext_state, "restore", actions.restore, form_data())

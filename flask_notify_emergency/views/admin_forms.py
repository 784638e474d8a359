"""The dashboard's forms: the banners and rollback pages, and every action as a form POST.

A form that worked answers with a flash and a redirect (so reloading does not repeat it);
a refused one re-renders its page with the error and the admin's input, status 400.
"""

from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, current_app, flash, redirect, request, url_for

from ..access import admin_required
from . import admin_actions as actions
from . import admin_queries as queries
from .admin_pages import overview_context, render_page


def _safe_next(default: str) -> str:
    """Where to go after a form: ``next`` if it is a dashboard path, else ``default``."""
    target = request.form.get("next") or ""
    prefix = current_app.config["NOTIFY_EMERGENCY_URL_PREFIX"] + "/"
    if target.startswith(prefix) and "//" not in target and "\\" not in target:
        return target
    return default


def banners_context() -> dict[str, Any]:
    ext = current_app.extensions["notify_emergency"]
    return {"banners": queries.banners_admin(ext)}


def rollback_context() -> dict[str, Any]:
    ext = current_app.extensions["notify_emergency"]
    return {"status": actions.rollback_status(ext), "rollback_word": actions.ROLLBACK_WORD,
            "restore_word": actions.RESTORE_WORD}


def submit(ext_state: Any, name: str, action: Callable[..., actions.ActionResult], args: tuple[Any, ...],
           page: str, template: str, context: Callable[[], dict[str, Any]], default: str) -> Any:
    """Run a form's action: flash + redirect when done, the page again with the error if refused."""
    try:
        result = actions.perform(ext_state, name, action, *args)
    except actions.ActionError as exc:
        return render_page(template, page, exc.status, error=str(exc), form=request.form, **context())
    flash(result.message, result.category)
    return redirect(_safe_next(default))


def register(bp: Blueprint, ext_state: Any) -> None:
    """Add the form routes and the banners and rollback pages to the blueprint."""
    bp_name = bp.name

    def on_overview(name: str, action: Callable[..., actions.ActionResult]) -> Any:
        return submit(ext_state, name, action, (request.form,), "overview",
                      "notify_emergency/overview.html",
                      lambda: overview_context(request.args.get("window")), url_for(f"{bp_name}.overview"))

    # -- overview actions ----------------------------------------------------------------
    @bp.route("/actions/activate", methods=["POST"])
    @admin_required
    def action_activate() -> Any:
        return on_overview("activate-emergency", actions.activate)

    @bp.route("/actions/deactivate", methods=["POST"])
    @admin_required
    def action_deactivate() -> Any:
        return on_overview("deactivate-emergency", actions.deactivate)

    @bp.route("/actions/fallback", methods=["POST"])
    @admin_required
    def action_fallback() -> Any:
        return on_overview("enable-fallback", actions.set_fallback)

    @bp.route("/actions/health", methods=["POST"])
    @admin_required
    def action_health() -> Any:
        return on_overview("health-check", actions.run_health_check)

    @bp.route("/actions/recover", methods=["POST"])
    @admin_required
    def action_recover() -> Any:
        return on_overview("auto-recover", actions.auto_recover)

    # -- banners -------------------------------------------------------------------------
    @bp.route("/banners")
    @admin_required
    def banners_page() -> Any:
        return render_page("notify_emergency/banners.html", "banners_page", **banners_context())

    @bp.route("/banners", methods=["POST"])
    @admin_required
    def banner_create() -> Any:
        return submit(ext_state, "post-banner", actions.post_banner, (request.form,), "banners_page",
                      "notify_emergency/banners.html", banners_context, url_for(f"{bp_name}.banners_page"))

    @bp.route("/banners/<int:banner_id>/dismiss", methods=["POST"])
    @admin_required
    def banner_dismiss(banner_id: int) -> Any:
        return submit(ext_state, "dismiss-banner", actions.dismiss_banner, (banner_id,), "banners_page",
                      "notify_emergency/banners.html", banners_context, url_for(f"{bp_name}.banners_page"))

    # -- rollback ------------------------------------------------------------------------
    @bp.route("/rollback")
    @admin_required
    def rollback_page() -> Any:
        return render_page("notify_emergency/rollback.html", "rollback_page", **rollback_context())

    @bp.route("/rollback", methods=["POST"])
    @admin_required
    def rollback_submit() -> Any:
        return submit(ext_state, "rollback", actions.rollback, (request.form,), "rollback_page",
                      "notify_emergency/rollback.html", rollback_context, url_for(f"{bp_name}.rollback_page"))

    @bp.route("/restore", methods=["POST"])
    @admin_required
    def restore_submit() -> Any:
        return submit(ext_state, "restore", actions.restore, (request.form,), "rollback_page",
                      "notify_emergency/rollback.html", rollback_context, url_for(f"{bp_name}.rollback_page"))

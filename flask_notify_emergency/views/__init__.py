"""The surfaces on the web: the extension's blueprint (the client API for users, the admin
dashboard's pages, forms and JSON API, the public status page, the load balancer probes) and
the dashboard's live Socket.IO namespace (:mod:`.admin_realtime`).

Uses every phase below it; nothing in the package imports from here except ``extension``,
which calls :func:`make_blueprint` and ``admin_realtime.init_app``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import assets
from . import admin, admin_api, admin_forms, admin_realtime, client, probes, prometheus, status_page

__all__ = ["admin_realtime", "make_blueprint"]


def make_blueprint(ext_state: Any) -> Blueprint:
    """Build the blueprint from config (name, prefix, templates, static)."""
    cfg = ext_state.app.config
    bp = Blueprint(
        cfg["NOTIFY_EMERGENCY_BLUEPRINT_NAME"], __name__,
        url_prefix=cfg["NOTIFY_EMERGENCY_URL_PREFIX"],
        template_folder=assets.templates_dir(),
        static_folder=assets.static_dir(),
        static_url_path="/static",
    )
    for part in (client, admin, admin_forms, admin_api, status_page, probes, prometheus):
        part.register(bp, ext_state)
    return bp

"""The extension's blueprint: the client API for users, the dashboard for admins."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import assets as resources


def make_blueprint(ext_state: Any) -> Blueprint:
    """Build the blueprint from config (name, prefix, templates, static)."""
    cfg = ext_state.app.config
    bp = Blueprint(
        cfg["NOTIFY_EMERGENCY_BLUEPRINT_NAME"], __name__,
        url_prefix=cfg["NOTIFY_EMERGENCY_URL_PREFIX"],
        template_folder=resources.templates_dir(),
        static_folder=resources.static_dir(),
        static_url_path="/static",
    )
    from . import client

    client.register(bp, ext_state)
    for module in _admin_modules():
        module.register(bp, ext_state)
    return bp


def _admin_modules() -> list[Any]:
    """Dashboard modules present in this installation, in registration order."""
    import importlib

    found = []
    for name in ("admin", "admin_api", "status_page", "probes"):
        try:
            found.append(importlib.import_module(f"{__name__}.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    return found

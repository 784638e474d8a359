"""The two status messages: the admin dashboard's (for the response team) and the public
status page's (for users).

Each is one switch in the control table (the database is the truth, every worker reads the
same). A public status other than ``operational`` also puts one banner of kind ``status`` on
every page; a new status replaces it, ``operational`` removes it.
"""

from __future__ import annotations

from typing import Any

from ..models import utcnow
from ..respond import current_event
from .user_communication import dismiss_banners, post_banner

DASHBOARD_KEY = "dashboard_status"
PUBLIC_KEY = "status_page"

#: The response team's status, as shown on the dashboard and by ``status``.
DASHBOARD_STATUSES = ("normal", "investigating", "emergency_active", "recovering", "resolved")
#: The public status, as shown on the status page.
PUBLIC_STATUSES = ("operational", "degraded", "partial_outage", "major_outage")
PUBLIC_LABELS = {"operational": "Operational", "degraded": "Degraded performance",
                 "partial_outage": "Partial outage", "major_outage": "Major outage"}
#: Banner level shown to users for each non-operational public status.
BANNER_LEVELS = {"degraded": "warning", "partial_outage": "danger", "major_outage": "critical"}
BANNER_KIND = "status"
MESSAGE_MAX_LENGTH = 1000


def _message(message: Any) -> str:
    if not isinstance(message, str) or not message.strip():
        raise ValueError("--message is required: say what users or the team should know.")
    text = message.strip()
    if len(text) > MESSAGE_MAX_LENGTH:
        raise ValueError(f"--message is {len(text)} characters; the limit is {MESSAGE_MAX_LENGTH}.")
    return text


def _choice(value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"--status must be one of {', '.join(choices)}; got {value!r}.")
    return str(value)


# -- the dashboard's status ------------------------------------------------------------------
def dashboard_status(ext: Any) -> dict[str, Any] | None:
    """The team's current status message, or None if none was ever set."""
    value = ext.control.read(DASHBOARD_KEY)
    return dict(value) if isinstance(value, dict) else None


def set_dashboard_status(ext: Any, status: str, message: str, actor: str,
                         source: str = "cli") -> dict[str, Any]:
    """Set the status message the dashboard and ``status`` show; ValueError on bad input."""
    value = {"status": _choice(status, DASHBOARD_STATUSES), "message": _message(message),
             "updated_at": utcnow().isoformat() + "Z", "updated_by": actor}
    previous = dashboard_status(ext)
    ext.control.write(DASHBOARD_KEY, value, actor)
    event = _open_event_id(ext)
    ext.audit.record(actor, "update-dashboard", source, {"status": status, "message": value["message"]},
                     detail=f"was {previous['status'] if previous else 'unset'}", event_id=event)
    return {"ok": True, "dashboard_status": value, "previous": previous}


# -- the public status page ------------------------------------------------------------------
def public_status(ext: Any) -> dict[str, Any]:
    """The public status (``operational`` with no message until someone sets one)."""
    value = ext.control.read(PUBLIC_KEY)
    if not isinstance(value, dict):
        value = {"status": "operational", "message": None, "updated_at": None, "updated_by": None,
                 "banner_id": None}
    status = value.get("status")
    # only a known status has a label; anything else (None included) is shown as it is
    label = PUBLIC_LABELS.get(status, status) if isinstance(status, str) else status
    return dict(value, label=label)


def public_view(value: dict[str, Any]) -> dict[str, Any]:
    """What anonymous visitors may see: never who set it or internal ids."""
    return {"status": value.get("status"), "label": value.get("label"),
            "message": value.get("message"), "updated_at": value.get("updated_at")}


def set_public_status(ext: Any, status: str, message: str, actor: str,
                      source: str = "cli") -> dict[str, Any]:
    """Set the public status; post (or replace, or remove) its banner. ValueError on bad input."""
    status = _choice(status, PUBLIC_STATUSES)
    text = _message(message)
    previous = public_status(ext)
    removed = dismiss_banners(ext, BANNER_KIND, actor)
    banner = None
    if status != "operational":
        banner = post_banner(ext, text, level=BANNER_LEVELS[status], title=PUBLIC_LABELS[status],
                             actor=actor, kind=BANNER_KIND)
    value = {"status": status, "message": text, "updated_at": utcnow().isoformat() + "Z",
             "updated_by": actor, "banner_id": banner["id"] if banner else None}
    ext.control.write(PUBLIC_KEY, value, actor)
    ext.banners_changed(actor)  # also tells every worker's status page to re-read
    ext.audit.record(actor, "update-status-page", source, {"status": status, "message": text},
                     detail=f"was {previous['status']}; banner "
                            f"{'#' + str(banner['id']) if banner else 'none'}; {removed} old banner(s) removed",
                     event_id=_open_event_id(ext))
    return {"ok": True, "status_page": dict(value, label=PUBLIC_LABELS[status]),
            "previous": previous, "banner": banner, "banners_removed": removed}


def _open_event_id(ext: Any) -> int | None:
    event = current_event(ext)
    return int(event["id"]) if event else None

"""Telling users what is going on: site-wide banners and notices to chosen users, either
through the fallback channels only (flash on the next page, polling) or the normal path.

``send-user-notification --channel fallback`` is for when the real-time path is what broke:
nothing is tried over the socket, every word arrives by a page load or a poll.
``--channel all`` takes the normal path (real time when it works, fallbacks otherwise).
A notice to everyone is one banner row, never one row per user.
"""

from __future__ import annotations

from typing import Any

from .. import signals
from ..config import BANNER_LEVELS, PRIORITIES
from ..models import utcnow
from ..respond import post_banner as store_banner
from .operator_notice import admin_ids
from .operator_notice import parse_target as parse_notice_target

CHANNELS = ("fallback", "all")
#: ``notification_fallback``'s reason when the operator asked for the fallback channels.
FALLBACK_REASON = "requested"
DEFAULT_TITLE = "Service notice"
MAX_TARGET_USERS = 1000


def parse_target(ext: Any, text: str) -> list[str] | None:
    """``'all'`` -> None (everyone); ``'user:1,2'`` -> ``['1', '2']``; ``'admins'`` -> the admins.

    ValueError on anything else; :class:`.operator_notice.NoticeError` if no admin is known.
    """
    kind, ids = parse_notice_target(text)
    if kind == "all":
        return None
    if kind == "admins":
        ids = admin_ids(ext)
    if len(ids) > MAX_TARGET_USERS:
        raise ValueError(f"--target lists {len(ids)} users; at most {MAX_TARGET_USERS} at a time "
                         "(use --target all for everyone).")
    return ids


def post_banner(ext: Any, message: str, *, level: str, title: str | None, actor: str,
                kind: str = "broadcast", live: bool = True) -> dict[str, Any]:
    """One site-wide banner (what ``notify.broadcast()`` does), shown on every page.

    With ``live`` it is also pushed over the socket when the real-time path is up; without,
    pages show it on their next load or poll.
    """
    banner = dict(store_banner(ext, message, level, title, actor, kind=kind))
    pushed = False
    if live and "message" in banner and ext.notifier is not None and ext.control.mode == "normal" \
            and not ext.control.paused().get("realtime"):
        try:
            ext.notifier.broadcast_banner(banner)
            pushed = True
        except Exception as exc:  # pages show it anyway
            ext.app.logger.warning("flask-notify-emergency: live banner emit failed: %s", exc)
    return dict(banner, live=pushed)


def dismiss_banners(ext: Any, kind: str, actor: str) -> int:
    """Dismiss every active banner of ``kind``; return how many."""
    count = ext.store.dismiss_banner(None, actor, kind=kind)
    if count:
        ext.banners_changed(actor)
    return int(count)


def _fallback_only(ext: Any, uid: str, title: str, message: str, priority: str) -> int:
    """Store one notification for the fallbacks, never trying the socket."""
    now = utcnow()
    values = {"user_id": uid, "audience": "user", "title": title, "message": message,
              "priority": priority, "category": "emergency", "data": None, "action_url": None,
              "created_at": now, "delivered": False, "attempts": 0, "expires_at": None,
              "realtime_deadline": None}
    nid = ext.store.create(values)
    payload = {"id": nid, "user_id": uid, "title": title, "message": message, "priority": priority,
               "category": "emergency", "data": None, "action_url": None,
               "created_at": now.isoformat() + "Z"}
    signals.notification_sent.send(ext.app, notification=payload)
    ext.dispatcher.fallback(payload, FALLBACK_REASON)
    return nid


def send_user_notification(ext: Any, *, message: str, title: str | None, channel: str, target: str,
                           actor: str, source: str = "cli", level: str = "warning",
                           priority: str = "high") -> dict[str, Any]:
    """Tell users ``message``; ValueError (nothing stored) when any input is unusable."""
    if channel not in CHANNELS:
        raise ValueError(f"--channel must be one of {', '.join(CHANNELS)}; got {channel!r}.")
    if level not in BANNER_LEVELS:
        raise ValueError(f"--level must be one of {', '.join(BANNER_LEVELS)}; got {level!r}.")
    if priority not in PRIORITIES:
        raise ValueError(f"--priority must be one of {', '.join(PRIORITIES)}; got {priority!r}.")
    users = parse_target(ext, target)
    title = title.strip() if title and title.strip() else None
    arguments = {"channel": channel, "target": target, "title": title, "level": level, "priority": priority}
    if users is None:
        banner = post_banner(ext, message, level=level, title=title, actor=actor, kind="notice",
                             live=channel == "all")
        result: dict[str, Any] = {"ok": True, "channel": channel, "target": "all", "banner": banner,
                                  "notifications": []}
        ext.audit.record(actor, "send-user-notification", source, arguments,
                         detail=f"banner #{banner['id']}")
        return result
    full_title = title or DEFAULT_TITLE
    # validate every recipient before storing anything: bad input loses nothing, sends nothing
    uids = [ext.dispatcher.validate(uid, full_title, message, priority, "emergency", None, None) for uid in users]
    ids: list[dict[str, Any]] = []
    for uid in uids:
        if channel == "fallback":
            nid = _fallback_only(ext, uid, full_title, message, priority)
        else:
            nid = ext.dispatcher.send(uid, full_title, message, priority, "emergency")
        ids.append({"user_id": uid, "notification_id": nid})
    ext.audit.record(actor, "send-user-notification", source, arguments,
                     detail=f"{len(ids)} notification(s): " + ", ".join(str(i["notification_id"]) for i in ids))
    return {"ok": True, "channel": channel, "target": target, "banner": None, "notifications": ids}

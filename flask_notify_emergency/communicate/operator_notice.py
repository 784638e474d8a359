"""A notification an operator sends by hand (``send-notification``): to the admins, to every
user as a site-wide banner, or to named users.

Every recipient is checked before anything is stored, so a typo in one user id stores
nothing for anyone. Each user notification takes the normal path (real-time when possible,
the fallbacks otherwise), so it is never lost.
"""

from __future__ import annotations

import time
from typing import Any

from ..config import PRIORITIES
from ..respond import post_banner

#: Banner level used when ``--target all`` posts a banner, by priority.
BANNER_LEVEL = {"low": "info", "normal": "warning", "high": "danger", "critical": "critical"}
TARGET_HELP = "admins, all, or user:ID[,ID...]"


class NoticeError(Exception):
    """The notification cannot be sent; the message says what to change."""


def parse_target(target: str) -> tuple[str, list[str]]:
    """``'admins'`` / ``'all'`` / ``'user:7,9'`` -> (kind, ids); ValueError on anything else."""
    text = (target or "").strip()
    if text in ("admins", "all"):
        return text, []
    if text.startswith("user:"):
        ids = [part.strip() for part in text[5:].split(",")]
        if not ids or any(not i for i in ids):
            raise ValueError(f"--target {target!r} names no user: write user:ID or user:ID,ID (no spaces, no empty ids).")
        return "user", list(dict.fromkeys(ids))
    raise ValueError(f"unknown --target {target!r}: use {TARGET_HELP}.")


def admin_ids(ext: Any) -> list[str]:
    """The admins' user ids, from ``NOTIFY_EMERGENCY_ADMIN_USER_IDS``."""
    source = ext.app.config.get("NOTIFY_EMERGENCY_ADMIN_USER_IDS")
    if source is None:
        raise NoticeError("--target admins needs NOTIFY_EMERGENCY_ADMIN_USER_IDS: set it to a callable "
                          "returning the admins' user ids, or use --target user:ID.")
    ids = [str(i) for i in (source() or [])]
    if not ids:
        raise NoticeError("NOTIFY_EMERGENCY_ADMIN_USER_IDS returned no user ids: no admin to notify.")
    return ids


def _checked(ext: Any, uid: str, title: str, message: str, priority: str) -> str:
    try:
        return str(ext.dispatcher.validate(uid, title, message, priority, "emergency", None, None))
    except ValueError as exc:
        if str(exc).startswith("no such user"):
            raise ValueError(f"no such user {uid!r}: check the id in --target; nothing was sent.") from None
        raise


def _wait_for_outcome(ext: Any, ids: list[int], timeout: float) -> dict[int, dict[str, Any]]:
    """Wait until each real-time attempt was acknowledged or handed to the fallbacks."""
    deadline = time.monotonic() + timeout
    rows: dict[int, dict[str, Any]] = {}
    while True:
        rows = {nid: ext.store.get(nid) or {} for nid in ids}
        waiting = [nid for nid, r in rows.items() if not r.get("delivered") and r.get("realtime_deadline")]
        if not waiting or time.monotonic() >= deadline:
            return rows
        time.sleep(0.05)


def send_notice(ext: Any, *, title: str, message: str, priority: str, target: str, actor: str,
                source: str = "cli", wait: bool = True) -> dict[str, Any]:
    """Send to ``target``; return what happened to each recipient."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown --priority {priority!r}: use one of {', '.join(PRIORITIES)}.")
    kind, ids = parse_target(target)
    arguments = {"title": title, "priority": priority, "target": target}
    if kind == "all":
        banner = post_banner(ext, message, BANNER_LEVEL[priority], title, actor)
        ext.audit.record(actor, "send-notification", source, arguments, detail=f"banner #{banner['id']}")
        return {"ok": True, "target": "all", "banner": banner,
                "detail": f"banner #{banner['id']} shows on every page for every user"}
    if kind == "admins":
        ids = admin_ids(ext)
    # check every recipient before storing anything
    users = [_checked(ext, uid, title, message, priority) for uid in ids]
    sent = {uid: ext.dispatcher.send(uid, title, message, priority, "emergency") for uid in users}
    rows = _wait_for_outcome(ext, list(sent.values()),
                             ext.app.config["NOTIFY_EMERGENCY_ACK_TIMEOUT"] + 1.0 if wait else 0.0)
    recipients = []
    for uid, nid in sent.items():
        row = rows.get(nid, {})
        if row.get("delivered"):
            how = f"delivered ({row.get('channel')})"
        elif row.get("realtime_deadline"):
            how = "sent in real time, awaiting acknowledgement (the fallbacks take it if none comes)"
        else:
            how = "queued for the fallbacks (flash on the next page, or the client's poll)"
        recipients.append({"user_id": uid, "notification_id": nid, "outcome": how})
    ext.audit.record(actor, "send-notification", source, dict(arguments, users=users),
                     detail=f"notifications {', '.join('#' + str(n) for n in sent.values())}")
    return {"ok": True, "target": kind, "recipients": recipients}

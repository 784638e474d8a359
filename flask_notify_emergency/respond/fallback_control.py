"""Turning the fallbacks on and off by hand, cluster-wide, and proving they work.

* The **flash** fallback is forced by pausing real-time delivery (the ``realtime``
  service): every worker's dispatcher then skips Socket.IO and marks the user pending, and
  the next page request flashes (or the client's poll returns) the stored notification.
* The **broadcast** fallback is the emergency banner: one banner row of kind
  ``emergency`` that every page shows.

What was enabled, by whom and when is kept in the ``fallbacks`` switch, so ``status`` and
the dashboard can show it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from .. import signals
from ..delivery import flash_pending, render_banners
from ..models import utcnow
from . import operator_hold
from .emergency import current_event

KINDS = ("flash", "broadcast")
EMERGENCY_BANNER_KIND = "emergency"
DEFAULT_BROADCAST_TITLE = "Notifications are delayed"
DEFAULT_BROADCAST = ("We are experiencing notification system issues. Please refresh your page "
                     "if you don't see updates.")


class FallbackTestError(Exception):
    """The fallback test cannot run safely; the message says what to change."""


def _stamp() -> str:
    return utcnow().isoformat() + "Z"


def _record(ext: Any, kind: str, value: dict[str, Any] | None, actor: str) -> None:
    current = dict(ext.control.read("fallbacks", {}) or {})
    if value is None:
        current.pop(kind, None)
    else:
        current[kind] = value
    ext.control.write("fallbacks", current, actor)


def post_banner(ext: Any, message: str, level: str, title: str | None, actor: str,
                kind: str = "broadcast") -> dict[str, Any]:
    """Store a site-wide banner, tell every worker, and return it (as pages render it)."""
    bid = ext.dispatcher.broadcast(message, level, title, None, None, actor, kind=kind)
    ext.banners_changed(actor)
    banner = next((b for b in ext.store.active_banners() if b["id"] == bid), {"id": bid})
    signals.banner_posted.send(ext.app, banner=banner)
    return banner


def emergency_banners(ext: Any) -> list[dict[str, Any]]:
    return [b for b in ext.store.active_banners() if b["kind"] == EMERGENCY_BANNER_KIND]


def enable_fallback(ext: Any, kind: str, actor: str, source: str = "cli", message: str | None = None,
                    title: str | None = None, level: str = "critical") -> dict[str, Any]:
    """Force the flash fallback, or post the emergency broadcast banner."""
    if kind not in KINDS:
        raise ValueError(f"unknown fallback type {kind!r}: use one of {', '.join(KINDS)}.")
    result: dict[str, Any] = {"ok": True, "type": kind, "changed": True}
    if kind == "flash":
        was = bool((ext.control.read("paused", {}) or {}).get("realtime"))
        ext.control.set_paused("realtime", True, actor)
        _record(ext, "flash", {"by": actor, "at": _stamp()}, actor)
        result.update(changed=not was, detail="real-time delivery paused in every worker: notifications "
                      "are stored and shown by flash on the next page, or by the client's poll")
    else:
        existing = emergency_banners(ext)
        if existing:
            banner = existing[0]
            result.update(changed=False, banner=banner,
                          detail=f"the emergency banner #{banner['id']} is already showing")
        else:
            banner = post_banner(ext, message or DEFAULT_BROADCAST, level, title or DEFAULT_BROADCAST_TITLE,
                                 actor, kind=EMERGENCY_BANNER_KIND)
            result.update(banner=banner, detail=f"emergency banner #{banner['id']} posted on every page")
        _record(ext, "broadcast", {"by": actor, "at": _stamp(), "banner_id": banner["id"]}, actor)
    ext.audit.record(actor, "enable-fallback", source, {"type": kind, "message": message},
                     outcome="ok" if result["changed"] else "noop", detail=result["detail"])
    if actor != "monitor":
        event = current_event(ext)
        result["hold"] = operator_hold.place(ext, "enable-fallback", actor, int(event["level"]) if event else None)
    return result


def disable_fallback(ext: Any, kinds: tuple[str, ...], actor: str, source: str = "cli") -> dict[str, Any]:
    """Undo :func:`enable_fallback` for ``kinds`` (resume real-time, dismiss the banner)."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown fallback type {kind!r}: use one of {', '.join(KINDS)}.")
    done: dict[str, Any] = {}
    if "flash" in kinds:
        was = bool((ext.control.read("paused", {}) or {}).get("realtime"))
        if was:
            ext.control.set_paused("realtime", False, actor)
        _record(ext, "flash", None, actor)
        done["flash"] = "real-time delivery resumed" if was else "real-time delivery was not paused"
    if "broadcast" in kinds:
        count = ext.store.dismiss_banner(None, actor, kind=EMERGENCY_BANNER_KIND)
        if count:
            ext.banners_changed(actor)
        _record(ext, "broadcast", None, actor)
        done["broadcast"] = f"{count} emergency banner(s) dismissed" if count else "no emergency banner was showing"
    mode = ext.control.read("mode", "normal") or "normal"
    result = {"ok": True, "types": list(kinds), "done": done, "mode": mode}
    if mode != "normal":
        result["note"] = (f"the delivery mode is still '{mode}', so notifications keep going to the "
                          "fallbacks until 'deactivate-emergency'")
    ext.audit.record(actor, "disable-fallback", source, {"types": list(kinds)}, detail="; ".join(done.values()))
    return result


def _claim_page(ext: Any, user: Any, path: str) -> list[str]:
    """Flash messages one page request of ``user`` would show, through the real hook."""
    from flask import get_flashed_messages
    from flask_login import login_user

    with ext.app.test_request_context(path, headers={"Accept": "text/html"}):
        login_user(user)
        flash_pending(ext)
        return [str(m) for m in get_flashed_messages()]


def _page_path(ext: Any) -> str:
    """A page of the host that matches a route (the hook ignores unrouted requests)."""
    adapter = ext.app.url_map.bind("localhost")
    for path in list(ext.app.config.get("NOTIFY_EMERGENCY_TEST_PAGES") or []) + ["/"]:
        try:
            adapter.match(path, method="GET")
        except Exception:
            continue
        return str(path)
    raise FallbackTestError("no page of NOTIFY_EMERGENCY_TEST_PAGES matches a route of the app: "
                            "list one the test user may open, e.g. ['/'].")


def run_fallback_test(ext: Any, user_id: str, actor: str, source: str = "cli") -> dict[str, Any]:
    """Send a test notification to ``user_id`` through the fallback path, claim it as that
    user in a test request, and check it arrives exactly once; render the banners too."""
    steps: list[dict[str, Any]] = []

    def step(name: str, ok: bool, detail: str) -> bool:
        steps.append({"step": name, "ok": ok, "detail": detail})
        return ok

    loader = getattr(getattr(ext.app, "login_manager", None), "_user_callback", None)
    if loader is None:
        raise FallbackTestError("test-fallback logs in as the test user through Flask-Login's "
                                "user_loader; this app has none.")
    uid = ext.dispatcher.validate(user_id, "Fallback test", "test", "low", "test", None, None)
    user = loader(uid)
    if user is None:
        raise ValueError(f"no such user {uid!r}: pass --user with an existing user's id.")
    waiting = ext.store.pending_user_ids()
    if uid in waiting:
        raise FallbackTestError(
            f"user {uid} has undelivered notifications; the test would claim them too. "
            "Use a dedicated test user (--user ID or NOTIFY_EMERGENCY_TEST_USER_ID).")
    path = _page_path(ext)
    token = uuid.uuid4().hex[:12]
    title, message = "Fallback test", f"Test notification {token} through the fallback path."
    now = utcnow()
    nid = ext.store.create({"user_id": uid, "audience": "user", "title": title, "message": message,
                            "priority": "low", "category": "test", "created_at": now, "delivered": False,
                            "attempts": 0, "expires_at": now + dt.timedelta(hours=1)})
    ext.dispatcher.fallback({"id": nid, "user_id": uid, "title": title, "message": message,
                             "priority": "low", "category": "test"}, "test")
    step("stored", True, f"notification #{nid} stored for user {uid} and handed to the fallbacks")
    step("pending-marker", bool(ext.state.may_have_pending(uid)), "the user is marked as having pending notifications")
    first = _claim_page(ext, user, path)
    hits = sum(token in m for m in first)
    step("flashed", hits == 1, f"the next page ({path}) flashed it {hits} time(s)")
    if hits:
        # the page's ack outbox cookie, carried by the browser's next request, confirms it
        ext.dispatcher.acknowledge_many([nid], uid)
    second = _claim_page(ext, user, path)
    again = sum(token in m for m in second)
    step("exactly-once", again == 0, f"the page after flashed it {again} time(s)")
    row = ext.store.get(nid) or {}
    step("stored-as-delivered", bool(row.get("delivered")) and row.get("channel") == "flash",
         f"row delivered={row.get('delivered')} channel={row.get('channel')}")
    mode = ext.control.read("mode", "normal") or "normal"
    with ext.app.test_request_context(path):
        html = str(render_banners(ext))
    banners = ext.banners()
    missing = [b["id"] for b in banners if f'data-banner-id="{b["id"]}"' not in html]
    notice = (mode != "normal") == ("notify-emergency-mode" in html)
    step("banners-rendered", not missing and notice,
         f"{len(banners)} banner(s) rendered" + (", with the emergency notice" if mode != "normal" else "")
         + (f"; missing #{missing}" if missing else ""))
    ok = all(s["ok"] for s in steps)
    ext.audit.record(actor, "test-fallback", source, {"user_id": uid}, outcome="ok" if ok else "failed",
                     detail=f"notification #{nid}")
    return {"ok": ok, "user_id": uid, "notification_id": nid, "page": path, "mode": mode, "steps": steps}

"""``verify-rollback``: is the cluster really on flash-only delivery, and does it work?

1. the switches: the database says ``legacy`` with real-time delivery paused;
2. the workers: every reporting worker acts on ``legacy`` (see :mod:`.worker_mode`);
3. a test notification to the test user goes the flash path and is flashed by a page
   request made for that user through the app's test client;
4. the test pages load (:func:`.validation.test_pages`);
5. the database checks pass (:func:`.validation.check_database`).

The result is written to the audit log (``verify-rollback``, with the checks), where the
rollback report finds it.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from ..respond import check_workers
from .journal import Journal
from .validation import check_database, fetch_page, login_client, test_pages


def check_switches(ext: Any) -> dict[str, Any]:
    mode = ext.control.read("mode", "normal") or "normal"
    paused = bool((ext.control.read("paused", {}) or {}).get("realtime"))
    ok = mode == "legacy" and paused
    return {"name": "switches", "ok": ok,
            "detail": f"mode '{mode}', real-time {'paused' if paused else 'running'}"
            + ("" if ok else " (expected 'legacy' and paused: run 'rollback' first)")}


def check_flash_delivery(ext: Any, user_id: str | None) -> dict[str, Any]:
    """Send a test notification and claim it as a flash in a request for ``user_id``."""
    name = "flash-delivery"
    if not user_id:
        return {"name": name, "ok": False,
                "detail": "no test user: set NOTIFY_EMERGENCY_TEST_USER_ID or pass --user ID"}
    t = ext.models.Notification.__table__
    with ext.engine.connect() as conn:
        waiting = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.user_id == str(user_id), t.c.delivered == sa.false())).scalar() or 0)
    if waiting:
        # a test request would take them from the user's own next page view
        return {"name": name, "ok": False,
                "detail": f"test user {user_id} has {waiting} undelivered notifications; use a dedicated "
                          "test user (NOTIFY_EMERGENCY_TEST_USER_ID) so none are taken from a real person"}
    title = f"Rollback check {uuid.uuid4().hex[:8]}"
    try:
        with ext.app.app_context():
            nid = ext.dispatcher.send(str(user_id), title, "Flash delivery works.", priority="low",
                                      category="rollback-check")
    except ValueError as exc:
        return {"name": name, "ok": False, "detail": f"cannot send to the test user: {exc}"}
    row = ext.store.get(nid) or {}
    if row.get("realtime_deadline") is not None or row.get("channel") == "realtime":
        return {"name": name, "ok": False, "notification_id": nid,
                "detail": "the test notification went to the real-time path: the mode has not reached this process"}
    client = login_client(ext.app, str(user_id))
    page = (ext.app.config["NOTIFY_EMERGENCY_TEST_PAGES"] or ["/"])[0]
    shown = False
    # one request offers it as a flash (unless flashes were already waiting in the session);
    # the page carries it into the ack outbox cookie and the next request confirms it
    for _ in range(3):
        result = fetch_page(ext.app, client, page, claim=True)
        shown = shown or title in (result.get("body") or "")
        row = ext.store.get(nid) or {}
        if row.get("delivered"):
            break
    delivered = bool(row.get("delivered")) and row.get("channel") in ("flash", "poll")
    offered = not delivered and row.get("offered_via") == "flash"
    if delivered:
        detail = (f"notification {nid} delivered by {row.get('channel')}"
                  + (" and shown in the page" if shown else ""))
    elif offered:
        detail = (f"notification {nid} offered as a flash; the page does not render flashes, so it "
                  "waits in the session for a page that does")
    else:
        detail = f"notification {nid} was not claimed by a page request for user {user_id}"
    return {"name": name, "ok": delivered or offered, "notification_id": nid, "shown_in_page": shown,
            "detail": detail}


def verify_rollback(ext: Any, *, actor: str, source: str, user_id: str | None = None,
                    timeout: float = 15.0) -> dict[str, Any]:
    """Run every check; ``ok`` only when all pass. Recorded in the audit log."""
    user_id = user_id or ext.app.config["NOTIFY_EMERGENCY_TEST_USER_ID"]
    switches = check_switches(ext)
    checks = [switches, check_workers(ext, "legacy", True, timeout if switches["ok"] else 0.0)]
    checks.append(check_flash_delivery(ext, user_id) if switches["ok"] else
                  {"name": "flash-delivery", "ok": False, "detail": "skipped: not rolled back"})
    pages = test_pages(ext, user_id=user_id)
    failing_pages = [f"{p['url']} as {p['role']}: {p['detail']}" for p in pages["pages"] if not p["ok"]]
    checks.append({"name": "pages", "ok": pages["ok"],
                   "detail": "; ".join(pages["problems"] + failing_pages)
                   or f"{len(pages['pages'])} page loads fine", "pages": pages["pages"]})
    database = check_database(ext)
    checks.append({"name": "database", "ok": database["ok"],
                   "detail": "; ".join(c["detail"] for c in database["checks"] if not c["ok"]) or "all checks pass"})
    ok = all(c["ok"] for c in checks)
    last = Journal(ext.engine, ext.models).latest("rollback")
    op_id = last["operation_id"] if last else None
    ext.audit.record(actor, "verify-rollback", source,
                     {"operation_id": op_id, "ok": ok,
                      "checks": [{"name": c["name"], "ok": c["ok"], "detail": c.get("detail")} for c in checks]},
                     outcome="ok" if ok else "failed")
    return {"ok": ok, "operation_id": op_id, "checks": checks}

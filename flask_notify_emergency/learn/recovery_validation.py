"""``validate-recovery``: the runbook's "Post-Recovery Validation" checklist, checked.

=================== ==================================================================
checklist line      how it is checked
=================== ==================================================================
WebSocket           the delivery mode is normal, real time not paused, the breaker not
connections         open, and the health check ``realtime`` (end-to-end canary) passes
Notification        a test notification to the test user reaches them: acknowledged in
delivery            real time, or claimed by a page request made for them
Database            ``SELECT 1`` with every table present, and a switch written and read
persistence         back
User                the health check ``sessions``: the session interface round-trips and
authentication      Flask-Login's user loader answers
Pages load          every ``NOTIFY_EMERGENCY_TEST_PAGES`` URL, as the test user and an admin
Admin               a notification to every admin is stored and either delivered or
notifications       queued for the fallbacks (never lost)
Console errors,     need a browser and a person: listed as manual, never counted as passed
performance
=================== ==================================================================
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, TypedDict

import sqlalchemy as sa

from ..automation import probe_database
from ..communicate import NoticeError, send_notice
from ..detect import run_health_checks
from ..rollback import admin_user_ids, database_reachable, fetch_page, login_client, test_pages

#: Check result: (True pass / False fail / None manual or skipped, detail).
Outcome = tuple[bool | None, str]


class ChecklistResult(TypedDict):
    """One checklist line in the ``validate-recovery`` report."""

    name: str
    checklist: str
    ok: bool | None
    detail: str


def health_checks(ext: Any) -> dict[str, Any]:
    return dict(run_health_checks(ext, only=["realtime", "sessions"]).to_dict()["checks"])


def check_realtime(ext: Any, health: dict[str, Any]) -> Outcome:
    mode = ext.control.read("mode", "normal") or "normal"
    paused = bool((ext.control.read("paused", {}) or {}).get("realtime"))
    breaker = ext.breaker.current
    check = health.get("realtime") or {}
    canary = (check.get("detail") or {}).get("canary") or {}
    problems = []
    if mode != "normal":
        problems.append(f"delivery mode is '{mode}'")
    if paused:
        problems.append("real-time delivery is paused")
    if breaker == "open":
        problems.append("the circuit breaker is open")
    if check.get("status") != "ok":
        problems.append(f"health check realtime is {check.get('status')}"
                        + (f": {check.get('error')}" if check.get("error") else ""))
    return not problems, "; ".join(problems) or (
        "real time on in every worker; canary " + ("verified" if canary.get("verified") else
                                                  str(canary.get("note") or canary.get("path") or "sent")))


def undelivered(ext: Any, user_id: str) -> int:
    t = ext.models.Notification.__table__
    with ext.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.user_id == user_id, t.c.delivered == sa.false())).scalar() or 0)


def check_delivery(ext: Any, user_id: str | None) -> Outcome:
    """A test notification reaches the test user, by real time or a page request."""
    if not user_id:
        return False, "no user to test with: set NOTIFY_EMERGENCY_TEST_USER_ID (or pass --user)"
    uid = str(user_id)
    waiting = undelivered(ext, uid)
    if waiting:
        return False, (f"user {uid} has {waiting} undelivered notification(s) a test page request would "
                       "take from them: use a dedicated test user (NOTIFY_EMERGENCY_TEST_USER_ID)")
    ok, detail, _row = deliver_test_notification(ext, uid, f"Recovery validation {uuid.uuid4().hex[:8]}",
                                                 "Notification delivery works.")
    return ok, detail


def deliver_test_notification(ext: Any, uid: str, title: str, message: str) -> tuple[bool, str, dict[str, Any]]:
    """Send ``uid`` a test notification and see it delivered: acknowledged by their browser,
    else claimed by a page request as that user (the flash path). (ok, detail, its row)."""
    nid = ext.dispatcher.send(uid, title, message, "low", "validation")
    deadline = time.monotonic() + float(ext.app.config["NOTIFY_EMERGENCY_ACK_TIMEOUT"]) + 2.0
    row = ext.store.get(nid) or {}
    while not row.get("delivered") and row.get("realtime_deadline") is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # a browser may acknowledge it; otherwise the watcher hands it to the fallbacks
        row = ext.store.get(nid) or {}
    if row.get("delivered"):
        return True, f"notification #{nid} acknowledged by the user's browser ({row.get('channel')})", row
    client = login_client(ext.app, uid)
    page = (ext.app.config["NOTIFY_EMERGENCY_TEST_PAGES"] or ["/"])[0]
    for _ in range(3):
        fetch_page(ext.app, client, page, claim=True)  # a page view as that user, which claims it
        row = ext.store.get(nid) or {}
        if row.get("delivered"):
            # the first page offers it as a flash; the next one confirms what the first showed
            return True, f"notification #{nid} delivered by {row.get('channel')} on a page request", row
    if row.get("offered_via") == "flash":
        return True, (f"notification #{nid} offered as a flash on a page request; the page does not "
                      "render flashes, so it waits in the session for one that does"), row
    return False, f"notification #{nid} was neither acknowledged nor claimed by a page request for user {uid}", row


def check_database(ext: Any, actor: str) -> Outcome:
    reachable = database_reachable(ext)
    if not reachable["ok"]:
        return False, reachable["detail"]
    ok, detail = probe_database(ext, actor)
    return ok, f"{reachable['detail']}; {detail}"


def check_sessions(health: dict[str, Any]) -> Outcome:
    check = health.get("sessions") or {}
    ok = check.get("status") in ("ok", "skipped")
    return ok, ("sessions and the user loader work" if ok else
                f"health check sessions is {check.get('status')}: {check.get('error')}")


def check_admins(ext: Any, actor: str, source: str) -> Outcome:
    try:
        result = send_notice(ext, title="Recovery validation", message="Admin notifications are delivered again.",
                             priority="low", target="admins", actor=actor, source=source)
    except (NoticeError, ValueError) as exc:
        return False, str(exc)
    rows = {r["notification_id"]: ext.store.get(r["notification_id"]) or {} for r in result["recipients"]}
    lost = [nid for nid, row in rows.items() if not row]
    return not lost and bool(rows), "; ".join(f"user {r['user_id']}: {r['outcome']}" for r in result["recipients"])


def check_pages(ext: Any, user_id: str | None) -> Outcome:
    result = test_pages(ext, user_id=user_id)
    bad = [f"{p['url']} as {p['role']}: {p['detail']}" for p in result["pages"] if not p["ok"]]
    return result["ok"], "; ".join(result["problems"] + bad) or f"{len(result['pages'])} page load(s) fine"


def validate_recovery(ext: Any, *, actor: str, source: str = "cli", user_id: str | None = None) -> dict[str, Any]:
    """Run the checklist; ``ok`` only when every automated check passes. Audited."""
    uid = user_id or ext.app.config["NOTIFY_EMERGENCY_TEST_USER_ID"]
    if not uid:
        admins = admin_user_ids(ext)
        uid = admins[0] if admins else None
    try:
        health = health_checks(ext)
    except Exception as exc:  # reported by the checks that need it
        health = {"realtime": {"status": "error", "error": str(exc)}, "sessions": {"status": "error", "error": str(exc)}}
    checks: tuple[tuple[str, str, Callable[[], Outcome]], ...] = (
        ("websocket", "WebSocket connections established", lambda: check_realtime(ext, health)),
        ("delivery", "Notification delivery working", lambda: check_delivery(ext, uid)),
        ("database", "Database persistence functional", lambda: check_database(ext, actor)),
        ("authentication", "User authentication working", lambda: check_sessions(health)),
        # pages before the admin notifications: a test page request as an admin would claim them
        ("pages", "All pages loading correctly", lambda: check_pages(ext, uid)),
        ("admin-notifications", "Admin notifications delivered", lambda: check_admins(ext, actor, source)),
        ("console-errors", "No console errors", lambda: (None, "manual: open the pages with the browser console")),
        ("performance", "Performance within acceptable limits",
         lambda: (None, "manual: compare response times with your usual figures")),
    )
    results: list[ChecklistResult] = []
    for name, line, check in checks:
        try:
            ok, detail = check()
        except Exception as exc:  # a crashing check fails; the others still run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results.append({"name": name, "checklist": line, "ok": ok, "detail": detail})
    failed = [r["name"] for r in results if r["ok"] is False]
    ext.audit.record(actor, "validate-recovery", source, {"user_id": uid},
                     outcome="failed" if failed else "ok", detail=", ".join(failed) or None)
    return {"ok": not failed, "checks": results, "user_id": uid,
            "passed": sum(1 for r in results if r["ok"]), "failed": len(failed),
            "manual": sum(1 for r in results if r["ok"] is None)}

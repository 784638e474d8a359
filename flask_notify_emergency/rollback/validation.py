"""Post-rollback validation: the pages load, the database is intact.

``test-pages`` fetches each ``NOTIFY_EMERGENCY_TEST_PAGES`` URL through the app's own test
client, logged in as a test user and as an admin. The login is Flask-Login's session (the
``_user_id``/``_fresh``/``_id`` keys written through the app's own session interface), so
it works for any host app whose user loader knows the id, without knowing its login form.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from ..models import utcnow
from ..detect import schema_problems

ERROR_MARKERS = ("Traceback (most recent call last)", "Internal Server Error", "jinja2.exceptions",
                 "sqlalchemy.exc.")
#: set on requests we make ourselves, so they do not count as real traffic
from ..access import SYNTHETIC


def admin_user_ids(ext: Any) -> list[str]:
    """Admin ids from ``NOTIFY_EMERGENCY_ADMIN_USER_IDS`` (empty when not configured)."""
    source = ext.app.config.get("NOTIFY_EMERGENCY_ADMIN_USER_IDS")
    if not callable(source):
        return []
    with ext.app.app_context():
        return [str(i) for i in (source() or [])]


def login_client(app: Any, user_id: str) -> Any:
    """A test client whose session is logged in as ``user_id`` (Flask-Login keys)."""
    client = app.test_client()
    client.environ_base[SYNTHETIC] = True
    manager = getattr(app, "login_manager", None)
    with app.test_request_context(environ_base=dict(client.environ_base)):
        ident = manager._session_identifier_generator() if manager is not None else None
    with client.session_transaction(environ_base=dict(client.environ_base)) as sess:
        sess["_user_id"] = str(user_id)
        sess["_fresh"] = True
        if ident:
            sess["_id"] = ident
    return client


def fetch_page(app: Any, client: Any, url: str, claim: bool = False) -> dict[str, Any]:
    """GET ``url``; ok when it ends below 400, not at the login page, without error markers.

    Unless ``claim`` is set the request carries ``X-Requested-With``, which the flash hook
    honours: looking at a page as a user must not take that user's pending notifications.
    """
    headers = {"Accept": "text/html"}
    if not claim:
        headers["X-Requested-With"] = "notify-emergency-test-pages"
    try:
        # a fresh app context per request: inside a CLI command the request would otherwise
        # share the command's ``g``, and with it Flask-Login's cached user of an earlier request
        with app.app_context():
            response = client.get(url, follow_redirects=True, headers=headers)
    except Exception as exc:  # an exception escaping the app is the worst failure of all
        return {"url": url, "ok": False, "status": None, "detail": f"{type(exc).__name__}: {exc}"}
    body = response.get_data(as_text=True)
    problems = []
    if response.status_code >= 400:
        problems.append(f"status {response.status_code}")
    markers = [m for m in ERROR_MARKERS if m in body]
    if markers:
        problems.append(f"error text in the page: {', '.join(markers)}")
    final = response.request.path if response.request is not None else url
    login_view = getattr(getattr(app, "login_manager", None), "login_view", None)
    if login_view and response.history:
        try:
            with app.test_request_context():
                from flask import url_for

                if final == url_for(login_view):
                    problems.append("redirected to the login page: the test login was refused")
        except Exception:
            pass
    return {"url": url, "ok": not problems, "status": response.status_code, "final_url": final,
            "detail": "; ".join(problems) or None, "body": body}


def test_pages(ext: Any, *, pages: list[str] | None = None, user_id: str | None = None,
               admin_id: str | None = None) -> dict[str, Any]:
    """Fetch every test page as the test user and as an admin."""
    app = ext.app
    pages = list(pages or app.config["NOTIFY_EMERGENCY_TEST_PAGES"])
    user_id = user_id or app.config["NOTIFY_EMERGENCY_TEST_USER_ID"]
    admins = admin_user_ids(ext)
    admin_id = admin_id or (admins[0] if admins else None)
    identities = [("user", user_id), ("admin", admin_id)]
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    for role, uid in identities:
        if not uid:
            setting = "NOTIFY_EMERGENCY_TEST_USER_ID (or --user)" if role == "user" else \
                "NOTIFY_EMERGENCY_ADMIN_USER_IDS (or --admin)"
            problems.append(f"no {role} to test as: set {setting}")
            continue
        client = login_client(app, str(uid))
        for url in pages:
            result = fetch_page(app, client, url)
            result.pop("body", None)
            results.append(dict(result, role=role, user_id=str(uid)))
    ok = not problems and bool(results) and all(r["ok"] for r in results)
    return {"ok": ok, "pages": results, "problems": problems}


# -- the database -----------------------------------------------------------------------
def database_reachable(ctx: Any) -> dict[str, Any]:
    """``SELECT 1`` and every table and column present (else what is missing and the fix)."""
    try:
        with ctx.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        report = schema_problems(ctx.app, ctx.engine, [m.__table__ for m in ctx.models.all])
    except Exception as exc:
        return {"name": "database", "ok": False, "detail": f"unreachable: {type(exc).__name__}: {exc}"[:300]}
    if not report.ok:
        return {"name": "database", "ok": False, "detail": report.describe(), "schema": report.to_dict()}
    return {"name": "database", "ok": True,
            "detail": f"reachable ({ctx.engine.dialect.name}), every table and column present"}


def check_database(ctx: Any) -> dict[str, Any]:
    """Schema, counts, orphans and backlog age; ``ok`` is False when anything is broken."""
    checks = [database_reachable(ctx)]
    counts: dict[str, int] = {}
    if not checks[0]["ok"]:
        return {"ok": False, "checks": checks, "counts": counts}
    m = ctx.models
    n, a, e, s = (m.Notification.__table__, m.AuditEntry.__table__, m.EmergencyEvent.__table__,
                  m.RollbackStep.__table__)
    with ctx.engine.connect() as conn:
        for model in m.all:
            counts[model.__table__.name] = int(conn.execute(
                sa.select(sa.func.count()).select_from(model.__table__)).scalar() or 0)
        orphan_audit = int(conn.execute(sa.select(sa.func.count()).select_from(a).where(
            a.c.event_id.is_not(None), ~sa.exists().where(e.c.id == a.c.event_id))).scalar() or 0)
        begun = sa.select(s.c.operation_id).where(s.c.step == "begin")
        orphan_steps = int(conn.execute(sa.select(sa.func.count()).select_from(s).where(
            s.c.operation_id.not_in(begun))).scalar() or 0)
        no_time = int(conn.execute(sa.select(sa.func.count()).select_from(n).where(
            n.c.delivered == sa.true(), n.c.delivered_at.is_(None))).scalar() or 0)
        undelivered, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(n.c.created_at))
                                           .where(n.c.delivered == sa.false())).one()
    checks.append({"name": "audit-events", "ok": orphan_audit == 0,
                   "detail": f"{orphan_audit} audit rows point to missing events" if orphan_audit
                   else "every audit row's event exists"})
    checks.append({"name": "journal", "ok": orphan_steps == 0,
                   "detail": f"{orphan_steps} journal rows belong to no operation" if orphan_steps
                   else "every journal row belongs to an operation"})
    checks.append({"name": "delivered-rows", "ok": no_time == 0,
                   "detail": f"{no_time} delivered rows have no delivery time" if no_time
                   else "every delivered row has its delivery time"})
    age = (utcnow() - oldest).total_seconds() if oldest else 0.0
    limit = ctx.app.config["NOTIFY_EMERGENCY_BACKLOG_MAX_AGE"]
    # an old backlog is a delivery problem, not a damaged database: reported, not failed
    checks.append({"name": "backlog", "ok": True, "warning": age > limit,
                   "detail": f"{int(undelivered or 0)} undelivered, oldest {int(age)}s old"
                   + (f" (over NOTIFY_EMERGENCY_BACKLOG_MAX_AGE={limit}s)" if age > limit else "")})
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "counts": counts,
            "undelivered": int(undelivered or 0),
            "oldest_undelivered": oldest.isoformat() + "Z" if isinstance(oldest, dt.datetime) else None}

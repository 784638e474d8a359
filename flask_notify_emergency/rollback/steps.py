"""The steps of a rollback (to flash-only delivery) and of a restore (back to real time).

Each step is idempotent: it looks at the store, not at the journal, to decide what to do,
so running it again after a crash (before or after its effect was committed) ends in the
same state as running it once. Steps act on a *context* with the attributes ``app``,
``engine``, ``models``, ``control``, ``state``, ``store`` and ``banners_changed`` -- the
extension's per-app state, or the throwaway copy :mod:`.rehearsal` builds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa

from .. import signals
from ..models import utcnow

BANNER_KIND = "rollback"
BANNER_TITLE = "Live notifications are paused"
BANNER_MESSAGE = ("Notifications now appear as messages on your next page view. "
                  "Reload the page now and then to see new ones.")


@dataclass(frozen=True)
class Step:
    """One journaled step: its name, what it does (for ``--dry-run``), and the action."""

    name: str
    description: str
    run: Callable[[Any, str], dict[str, Any]]


def pause_realtime(ctx: Any, actor: str) -> dict[str, Any]:
    was = bool((ctx.control.read("paused", {}) or {}).get("realtime"))
    if not was:
        ctx.control.set_paused("realtime", True, actor)
    return {"was_paused": was}


def switch_to_legacy(ctx: Any, actor: str) -> dict[str, Any]:
    return {"previous_mode": ctx.control.set_mode("legacy", actor)}


def hand_backlog_to_flash(ctx: Any, actor: str) -> dict[str, Any]:
    """Undelivered rows become claimable by the next page request or poll of their user."""
    t = ctx.models.Notification.__table__
    undelivered = t.c.delivered == sa.false()
    now = utcnow()
    with ctx.engine.connect() as conn:
        latest = conn.execute(sa.select(sa.func.max(t.c.realtime_deadline))
                              .where(undelivered, t.c.realtime_deadline > now)).scalar()
    waited = 0.0
    if latest is not None:
        # emits already on their way get their acknowledgement window, so a notification
        # the browser is showing right now is not flashed a second time
        limit = float(ctx.app.config["NOTIFY_EMERGENCY_ACK_TIMEOUT"]) + 1.0
        waited = min(max((latest - utcnow()).total_seconds() + 0.2, 0.0), limit)
        time.sleep(waited)
    with ctx.engine.begin() as conn:
        cleared = conn.execute(t.update().where(undelivered, t.c.realtime_deadline.is_not(None))
                               .values(realtime_deadline=None)).rowcount
    live = sa.and_(undelivered, sa.or_(t.c.expires_at.is_(None), t.c.expires_at > utcnow()))
    with ctx.engine.connect() as conn:
        per_user = conn.execute(sa.select(t.c.user_id, sa.func.count()).where(live).group_by(t.c.user_id)).all()
    for user_id, _ in per_user:
        ctx.state.mark_pending(str(user_id))
    return {"undelivered": int(sum(n for _, n in per_user)), "users": len(per_user),
            "deadlines_cleared": int(cleared or 0), "waited_seconds": round(waited, 2)}


def _active_rollback_banner(ctx: Any) -> int | None:
    b = ctx.models.Banner.__table__
    with ctx.engine.connect() as conn:
        return conn.execute(sa.select(b.c.id).where(b.c.kind == BANNER_KIND, b.c.dismissed_at.is_(None))
                            .order_by(b.c.id.desc()).limit(1)).scalar()


def post_banner(ctx: Any, actor: str) -> dict[str, Any]:
    existing = _active_rollback_banner(ctx)
    if existing is not None:
        return {"banner_id": existing, "reused": True}
    banner_id = ctx.store.create_banner({
        "title": BANNER_TITLE, "message": BANNER_MESSAGE, "level": "warning", "kind": BANNER_KIND,
        "created_at": utcnow(), "created_by": actor[:128]})
    ctx.banners_changed(actor)
    banner = next((b for b in ctx.store.active_banners() if b["id"] == banner_id), None)
    if banner is not None:
        signals.banner_posted.send(ctx.app, banner=banner)
    return {"banner_id": banner_id, "reused": False}


def resume_realtime(ctx: Any, actor: str) -> dict[str, Any]:
    was = bool((ctx.control.read("paused", {}) or {}).get("realtime"))
    if was:
        ctx.control.set_paused("realtime", False, actor)
    return {"was_paused": was}


def restore_mode(ctx: Any, actor: str) -> dict[str, Any]:
    """Back to ``normal`` -- or to ``emergency`` while an emergency event is still open, so
    leaving it stays the emergency procedure's decision (healthy checks in a row)."""
    e = ctx.models.EmergencyEvent.__table__
    with ctx.engine.connect() as conn:
        open_event = conn.execute(sa.select(e.c.id).where(e.c.status == "open").limit(1)).scalar()
    target = "emergency" if open_event is not None else "normal"
    return {"previous_mode": ctx.control.set_mode(target, actor), "mode": target, "open_event": open_event}


def dismiss_banner(ctx: Any, actor: str) -> dict[str, Any]:
    n = ctx.store.dismiss_banner(None, actor, kind=BANNER_KIND)
    if n:
        ctx.banners_changed(actor)
    return {"dismissed": n}


ROLLBACK_STEPS: tuple[Step, ...] = (
    Step("pause-realtime", "pause real-time delivery on every worker (no socket emits)", pause_realtime),
    Step("switch-mode", "switch the delivery mode to 'legacy' (flash messages and banners only)",
         switch_to_legacy),
    Step("hand-backlog", "hand undelivered notifications to the flash/poll path (clear real-time "
         "deadlines, mark their users pending)", hand_backlog_to_flash),
    Step("post-banner", "post a site-wide banner telling users to reload for updates", post_banner),
)

RESTORE_STEPS: tuple[Step, ...] = (
    Step("resume-realtime", "resume real-time delivery on every worker", resume_realtime),
    Step("switch-mode", "switch the delivery mode back to 'normal' ('emergency' while an event is open)",
         restore_mode),
    Step("dismiss-banner", "dismiss the rollback banner", dismiss_banner),
)


def current_values(ctx: Any) -> dict[str, Any]:
    """What the steps would act on, for ``--dry-run`` and the dashboard."""
    t = ctx.models.Notification.__table__
    with ctx.engine.connect() as conn:
        undelivered, users = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(t.c.user_id))).where(t.c.delivered == sa.false())).one()
    return {"mode": ctx.control.read("mode", "normal") or "normal",
            "paused": dict(ctx.control.read("paused", {}) or {}),
            "undelivered": int(undelivered or 0), "undelivered_users": int(users or 0),
            "rollback_banner": _active_rollback_banner(ctx)}

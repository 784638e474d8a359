"""The memory state backend's refresh of pending users: the first read is the whole backlog,
every later one only what changed since plus one bounded page of a sweep, so its cost does
not grow with the undelivered backlog (hundreds of thousands of rows at 10,000,000)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask_notify_emergency.delivery import NotificationStore
from flask_notify_emergency.models import utcnow

WAITING = 30
SWEEP = 4


def _rows(users: list[str], start: dt.datetime, **values: Any) -> list[dict[str, Any]]:
    return [dict(user_id=u, title="Maintenance", message="Tonight.", created_at=start + dt.timedelta(seconds=i),
                 **values) for i, u in enumerate(users)]


def test_a_refresh_after_the_first_reads_what_changed_and_one_sweep_page_not_the_backlog(any_database, make_app):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=any_database, NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS=3600.0)
    ext = app.extensions["notify_emergency"]
    t = ext.models.Notification.__table__
    start = utcnow() - dt.timedelta(hours=1)
    waiting = [f"w{i:02d}" for i in range(WAITING)]
    with ext.engine.begin() as conn:  # stored by another process: nobody here marked them pending
        conn.execute(t.insert(), _rows(waiting, start))
        conn.execute(t.insert(), _rows(["gone"], start + dt.timedelta(minutes=5), delivered=True,
                                       delivered_at=start, channel="poll"))
        conn.execute(t.insert(), _rows(["inflight"], start + dt.timedelta(minutes=6),
                                       realtime_deadline=utcnow() + dt.timedelta(hours=1)))
    store = NotificationStore(ext.engine, ext.models)  # a worker starting: its first read

    def changed() -> set[str]:
        return store.pending_users_changed(sweep_rows=SWEEP, id_overlap=0)

    assert changed() == set(waiting)
    # later reads: one sweep page (the oldest waiting rows first), not everyone again
    assert changed() == set(waiting[:SWEEP])
    assert changed() == set(waiting[SWEEP:2 * SWEEP])

    with ext.engine.begin() as conn:  # another process sends, and a deadline passes
        conn.execute(t.insert(), _rows(["new"], utcnow()))
        conn.execute(t.update().where(t.c.user_id == "inflight").values(realtime_deadline=utcnow()
                                                                      - dt.timedelta(seconds=1)))
    third = changed()
    assert {"new", "inflight"} <= third
    assert len(third) <= SWEEP + 2

    with ext.engine.begin() as conn:  # a delivered row made claimable again (a restore, elsewhere)
        conn.execute(t.update().where(t.c.user_id == "gone").values(delivered=False, delivered_at=None,
                                                                   channel=None))
    seen: set[str] = set()
    passes = 0
    while "gone" not in seen:  # found within one pass of the sweep, page by page
        page = changed()
        assert len(page) <= SWEEP + 1  # a page, plus the rest of its last instant
        seen |= page
        passes += 1
        assert passes <= (WAITING + 3) // SWEEP + 2, "the sweep never reached the restored row"
    # and a pass covers every waiting row again
    while not set(waiting) <= seen:
        seen |= changed()
        passes += 1
        assert passes <= 2 * ((WAITING + 3) // SWEEP + 2)


def test_the_sweep_does_not_stall_on_more_rows_of_one_instant_than_a_page(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS=3600.0)
    ext = app.extensions["notify_emergency"]
    t = ext.models.Notification.__table__
    at = utcnow() - dt.timedelta(minutes=10)
    batch = [f"b{i:02d}" for i in range(3 * SWEEP)]  # one send_many: every row the same created_at
    with ext.engine.begin() as conn:
        conn.execute(t.insert(), [dict(user_id=u, title="All", message="Hands.", created_at=at) for u in batch])
        conn.execute(t.insert(), _rows(["later"], at + dt.timedelta(minutes=1)))
    store = NotificationStore(ext.engine, ext.models)
    store.pending_users_changed(sweep_rows=SWEEP, id_overlap=0)
    first = store.pending_users_changed(sweep_rows=SWEEP, id_overlap=0)
    assert first == set(batch)  # the page, completed with the rest of its instant
    assert store.pending_users_changed(sweep_rows=SWEEP, id_overlap=0) == {"later"}


def test_the_memory_backend_learns_of_rows_stored_by_another_process(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS=0.001)
    ext = app.extensions["notify_emergency"]
    t = ext.models.Notification.__table__
    assert not ext.state.may_have_pending("cli-user")
    with ext.engine.begin() as conn:  # e.g. `flask emergency send-notification` in another process
        conn.execute(t.insert(), _rows(["cli-user"], utcnow()))
    assert ext.state.may_have_pending("cli-user")

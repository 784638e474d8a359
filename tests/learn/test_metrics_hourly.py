"""The dashboard's hourly totals give the same numbers as counting the rows, on SQLite, MariaDB
and PostgreSQL: rows stored before the counts existed (then counted by ``rebuild-metrics``),
rows on hour and bucket boundaries, rows delivered late (hours or days after they were
stored, by ack, flash or poll), a flash handed back, rows stored as delivered, deleted rows, an unknown channel,
and a clock in the middle of an hour (every window's newest bucket cut through)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from flask_notify_emergency.delivery.hourly import hour_of, rebuild
from flask_notify_emergency.learn.metrics import (WINDOWS, backlog_metrics, counted_by_hour, delivery_metrics,
                                            event_metrics, overview, parse_window)
from flask_notify_emergency.models import utcnow
from flask_notify_emergency.respond import emergency
from tests.conftest import login
from tests.support.cli import invoke_json
from tests.support.services import wait_until


def _backdate(ext: Any, event_id: int, started_at: dt.datetime) -> None:
    """Move an event's start back, telling the hourly totals (as back-dating code must)."""
    t = ext.models.EmergencyEvent.__table__
    with ext.engine.begin() as conn:
        before = conn.execute(sa.select(t.c.detected_at, t.c.started_at).where(t.c.id == event_id)).first()
        conn.execute(t.update().where(t.c.id == event_id).values(started_at=started_at))
        ext.store.hourly.event_started_at_changed(conn, before[0], before[1], started_at)


def stored(ext: Any, user: str, created_at: dt.datetime, **values: Any) -> dict[str, Any]:
    row = {"user_id": user, "audience": "user", "title": "t", "message": "m", "priority": "normal",
           "category": "system", "created_at": created_at, "delivered": False, "attempts": 0}
    row.update(values)
    return row


def same_numbers(ext: Any, now: dt.datetime) -> dict[str, Any]:
    """Every window's delivery numbers from both sources; assert they agree, return them."""
    out: dict[str, Any] = {"backlog": backlog_metrics(ext, from_hours=False)}
    assert {k: v for k, v in backlog_metrics(ext, from_hours=True).items() if k != "oldest_age_seconds"} == \
        {k: v for k, v in out["backlog"].items() if k != "oldest_age_seconds"}
    for name in WINDOWS:
        window = parse_window(name, now)
        rows = delivery_metrics(ext, window, from_hours=False)
        assert rows.pop("source") == "rows"
        if counted_by_hour(window):
            hours = delivery_metrics(ext, window, from_hours=True)
            assert hours.pop("source") == "hourly totals"
            assert hours == rows, name
        out[name] = rows
        events = event_metrics(ext, window, from_hours=False)
        assert events.pop("source") == "rows"
        if counted_by_hour(window):
            from_hours = event_metrics(ext, window, from_hours=True)
            assert from_hours.pop("source") == "hourly totals"
            # SQLite's scan computes durations with julianday(), to about 0.1 ms
            scanned = dict(events)
            for key in ("mttd_seconds", "mttr_seconds"):
                exact, scan = from_hours.pop(key), scanned.pop(key)
                assert (exact is None) == (scan is None), (name, key)
                assert exact is None or abs(exact - scan) <= 0.002, (name, key, exact, scan)
            assert from_hours == scanned, name
        out[f"events {name}"] = events
        # the overview reads the same in fewer statements (backlog and readiness together, a
        # window's deliveries and events together): the same numbers again
        with ext.app.app_context():
            whole = overview(ext, window)
        assert not whole["errors"], whole["errors"]
        assert whole["delivery"].pop("source") == ("hourly totals" if counted_by_hour(window) else "rows")
        assert whole["delivery"] == rows, name
        expected = event_metrics(ext, window, from_hours=counted_by_hour(window))
        assert whole["events"] == expected, name
        assert {k: v for k, v in whole["backlog"].items() if k != "oldest_age_seconds"} == \
            {k: v for k, v in out["backlog"].items() if k != "oldest_age_seconds"}
    return out


def test_hourly_counts_match_the_rows_in_every_window(any_database, make_app):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=any_database)
    ext = app.extensions["notify_emergency"]
    store, table = ext.store, ext.models.Notification.__table__
    now = hour_of(utcnow()) + dt.timedelta(minutes=37, seconds=12)
    day = hour_of(now).replace(hour=0)
    six = hour_of(now).replace(hour=hour_of(now).hour // 6 * 6)

    # rows from before the counts existed: written straight into the table
    old = [stored(ext, "u1", now - dt.timedelta(days=d, minutes=m), delivered=d % 2 == 0,
                  channel="realtime" if d % 2 == 0 else None) for d in range(0, 40, 3) for m in (0, 59)]
    events = ext.models.EmergencyEvent.__table__
    old_events = [{"level": 2, "failure_type": "manual", "status": "resolved" if d % 2 else "open",
                   "reason": "before", "affected_users": 0, "actions": [], "manual_intervention": False,
                   "started_at": now - dt.timedelta(days=d, seconds=90), "detected_at": now - dt.timedelta(days=d),
                   "resolved_at": now - dt.timedelta(days=d) + dt.timedelta(seconds=600) if d % 2 else None,
                   "recovered": d % 4 == 1} for d in range(0, 40, 3)]
    with ext.engine.begin() as conn:
        conn.execute(table.insert(), old)
        conn.execute(events.insert(), old_events)
    code, result = invoke_json(app, "rebuild-metrics")
    assert code == 0, result
    assert (result["rows_counted"], result["events_counted"]) == (len(old), len(old_events))
    assert ext.store.hourly.ready()

    with app.app_context():
        boundaries = [day, day - dt.timedelta(days=7), day - dt.timedelta(days=30), six,
                      six - dt.timedelta(hours=6), six - dt.timedelta(seconds=1), hour_of(now),
                      hour_of(now) - dt.timedelta(microseconds=1), now - dt.timedelta(hours=1),
                      now - dt.timedelta(days=30, hours=1)]
        for i, when in enumerate(boundaries):
            store.create(stored(ext, f"b{i}", when))
        # stored as delivered (what a flash-only fallback writes), and a channel of a host's own
        store.create(stored(ext, "f1", now - dt.timedelta(hours=30), delivered=True, channel="flash"))
        store.create(stored(ext, "s1", now - dt.timedelta(days=2), delivered=True, channel="sms"))
        # many at once, across hours
        store.create_many([stored(ext, f"m{i}", now - dt.timedelta(minutes=17 * i)) for i in range(300)])
        # late deliveries: rows from days ago claimed and acknowledged now
        late = [store.create(stored(ext, "late", now - dt.timedelta(days=5, hours=h))) for h in range(8)]
        flashed = store.claim("late", 3, "flash")
        assert len(flashed) == 3
        # a flash the response could not show goes back to waiting (and is claimed again below)
        assert store.unclaim([flashed[0]["id"]], "late", "flash") == 1
        polled = store.claim("late", 2, "poll")
        assert len(polled) == 2
        # offers count once the browser confirms them, by the channel that offered them
        confirmed = store.acknowledge_many([(int(r["id"]), "late") for r in flashed[1:] + polled])
        assert sorted(acked.channel for acked in confirmed.values()) == ["flash", "flash", "poll", "poll"]
        assert store.acknowledge(late[6], "late", "realtime")
        assert not store.acknowledge(late[0], "late", "realtime")  # confirmed already: counted once
        for i in range(5):  # u1's old rows, stored before the counts, delivered only now
            [row] = store.claim("u1", 1, "poll")
            assert store.acknowledge(int(row["id"]), "u1", None)
        # expired rows deleted by clear-queues
        gone = [store.create(stored(ext, "x", now - dt.timedelta(days=3, minutes=i),
                                    expires_at=utcnow() - dt.timedelta(seconds=1))) for i in range(4)]
        assert store.delete_expired(gone) == 4

        # events opened, resolved (recovered or not) and back-dated by a drill, through the code
        opened = [emergency.open_event(ext, level=2, failure_type="manual", reason=f"e{i}", triggered_by="t",
                                       started_at=utcnow() - dt.timedelta(seconds=30 * i)) for i in range(4)]
        emergency.resolve_event(ext, opened[0]["id"], "ops", True)
        emergency.resolve_event(ext, opened[1]["id"], "ops", False)
        emergency.resolve_event(ext, opened[1]["id"], "ops", True)  # resolved already: changes nothing
        _backdate(ext, opened[2]["id"], utcnow() - dt.timedelta(minutes=7))
        with ext.engine.connect() as conn:  # an old open event (stored before the totals) resolved now
            old_open = conn.execute(events.select().where(events.c.status == "open", events.c.reason == "before")
                                    .order_by(events.c.id.desc())).first()
        emergency.resolve_event(ext, old_open.id, "ops", True)

    numbers = same_numbers(ext, now + dt.timedelta(minutes=1))
    # the comparison is only worth something if the windows hold what was crafted
    assert numbers["30d"]["by_channel"]["poll"] == 7 and numbers["30d"]["by_channel"]["other"] == 1
    assert numbers["7d"]["by_channel"]["flash"] >= 3 and numbers["24h"]["undelivered"] > 0
    assert numbers["backlog"]["undelivered"] > 300
    assert numbers["events 24h"]["count"] == 5 and numbers["events 24h"]["resolved"] == 2
    assert numbers["events 30d"]["mttd_seconds"] is not None and numbers["events 30d"]["recovered"] >= 3
    # and again with the clock on an hour boundary, then a day later
    same_numbers(ext, hour_of(utcnow()) + dt.timedelta(hours=1))
    same_numbers(ext, now + dt.timedelta(days=1))

    # the overview's JSON reads the counts
    client = app.test_client()
    login(client, "admin")
    body = client.get("/emergency/api/overview?window=7d").get_json()
    assert body["delivery"]["source"] == "hourly totals"


def test_the_dashboard_builds_the_counts_on_first_use_and_counts_rows_meanwhile(make_app, tmp_path):
    app, _ = make_app()
    ext = app.extensions["notify_emergency"]
    now = utcnow()
    with ext.engine.begin() as conn:
        conn.execute(ext.models.Notification.__table__.insert(),
                     [stored(ext, "u", now - dt.timedelta(hours=h), delivered=True, channel="poll")
                      for h in range(100)])
    assert not ext.store.hourly.ready()
    client = app.test_client()
    login(client, "admin")
    first = client.get("/emergency/api/overview?window=7d").get_json()["delivery"]
    assert first["source"] == "rows" and first["by_channel"]["poll"] > 24
    wait_until(ext.store.hourly.ready, timeout=20, message="the hourly totals built in the background")
    second = client.get("/emergency/api/overview?window=7d").get_json()["delivery"]
    assert second["source"] == "hourly totals"
    assert {k: v for k, v in second.items() if k != "source"} == {k: v for k, v in first.items() if k != "source"}


def test_rebuilding_twice_gives_the_same_counts_and_a_missing_table_says_what_to_do(make_app):
    app, _ = make_app()
    ext = app.extensions["notify_emergency"]
    with app.app_context():
        ext.store.create_many([stored(ext, f"u{i}", utcnow() - dt.timedelta(hours=i)) for i in range(50)])
    first = rebuild(ext.engine, ext.models, ext.store.hourly)
    before = ext.store.hourly.since(dt.datetime(1971, 1, 1), "")
    second = rebuild(ext.engine, ext.models, ext.store.hourly)
    assert first["rows_counted"] == second["rows_counted"] == 50
    assert sorted(ext.store.hourly.since(dt.datetime(1971, 1, 1), "")) == sorted(before)

    ext.models.HourlyTotal.__table__.drop(ext.engine)
    ext.store.hourly._present = None  # as a fresh process would find it
    with app.app_context():  # sending goes on without the table
        ext.store.create(stored(ext, "u", utcnow()))
    assert not ext.store.hourly.ready()
    code, result = invoke_json(app, "rebuild-metrics")
    assert code == 1 and "db.create_all()" in result["error"]

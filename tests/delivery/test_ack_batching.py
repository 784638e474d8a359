"""Acknowledgements arriving together share a transaction; the watcher leaves acknowledged rows alone."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from flask_notify_emergency import signals
from flask_notify_emergency.delivery.batching import GroupCommit
from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from tests.conftest import login, user_id
from tests.support import databases
from tests.support.pages import NAMESPACE, notification_rows, received
from tests.support.services import wait_until


# -- the group commit itself -------------------------------------------------------------------

def test_callers_arriving_during_a_batch_share_the_next_one_and_get_their_own_results():
    first_running, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            first_running.set()
            release.wait(30)
        return [item * 10 for item in items]

    group = GroupCommit(run)
    results: dict[int, list[int]] = {}

    def call(items: list[int]) -> None:
        results[items[0]] = group(items)

    lead = threading.Thread(target=call, args=([1],))
    lead.start()
    assert first_running.wait(30)
    others = [threading.Thread(target=call, args=([k, k + 1],)) for k in (100, 200, 300, 400)]
    for t in others:
        t.start()
    wait_until(lambda: len(group._queue) == 4, timeout=30, message="four callers queued behind the batch")
    release.set()
    for t in [lead, *others]:
        t.join(30)

    assert batches[0] == [1]
    assert len(batches) == 2 and sorted(batches[1]) == [100, 101, 200, 201, 300, 301, 400, 401]
    assert results == {1: [10], 100: [1000, 1010], 200: [2000, 2010], 300: [3000, 3010], 400: [4000, 4010]}
    assert (group.batches, group.items) == (2, 9)


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_caller_runs_afresh():
    calls = 0

    def run(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database down")
        return items

    group: GroupCommit[str, str] = GroupCommit(run)
    with pytest.raises(RuntimeError, match="database down"):
        group(["a"])
    assert group(["b"]) == ["b"]


# -- batched acknowledgements across two workers -----------------------------------------------

@pytest.fixture(params=["mariadb", "postgres"])
def shared_database(request: pytest.FixtureRequest) -> Any:
    with databases.own_database(request.param) as url:
        yield url


def test_acks_racing_through_two_workers_mark_each_notification_delivered_exactly_once(shared_database, make_app):
    """Two apps on one database (two workers), eight threads each acknowledging every
    notification in random order and batches: each id is reported acknowledged once in all,
    every row delivered over the socket once, the hourly totals moved once per row."""
    apps = [make_app(SQLALCHEMY_DATABASE_URI=shared_database)[0] for _ in range(2)]
    exts = [app.extensions["notify_emergency"] for app in apps]
    owners = {name: user_id(apps[0], name) for name in ("alice", "bob")}
    owner_of: dict[int, str] = {}
    with apps[0].app_context():
        for i in range(120):
            uid = owners["alice" if i % 2 else "bob"]
            owner_of[int(exts[0].dispatcher.send(uid, f"n{i}", "batched acks"))] = uid
    ids = sorted(owner_of)
    acked: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def acker(k: int) -> None:
        rng = random.Random(k)
        order = list(ids)
        rng.shuffle(order)
        ext = exts[k % 2]
        start.wait(30)
        try:
            while order:
                chunk = order[:rng.randint(1, 7)]
                del order[:len(chunk)]
                for uid in sorted({owner_of[n] for n in chunk}):
                    got = ext.dispatcher.acknowledge_many([n for n in chunk if owner_of[n] == uid], uid)
                    with lock:
                        acked.extend(got)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=acker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(acked) == ids  # each exactly once, across both workers
    t = exts[0].models.Notification.__table__
    with exts[0].engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.delivered, t.c.channel).where(t.c.id.in_(ids))).all()
    assert sorted(set(rows)) == [(True, "realtime")] and len(rows) == len(ids)
    hourly = exts[1].store.hourly  # the slots of both workers, added up
    assert (hourly.total("n:realtime"), hourly.total("n:")) == (len(ids), 0)
    # the batches held every acknowledgement asked for, some of them together
    asked = sum(g.items for g in (e.dispatcher._acks for e in exts))
    assert asked >= len(ids) * 16


# -- the acknowledgement watcher -----------------------------------------------------------------

def test_the_ack_watcher_touches_only_rows_still_unacknowledged(make_app, tmp_path):
    """Three notifications emitted by one worker: one acknowledged through it, one through
    another worker, one never. After the deadline the watcher sends no statement naming the
    first, only reads the second (no UPDATE), and releases the third to the fallbacks."""
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    config = {"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_ACK_TIMEOUT": 4.0,
              "NOTIFY_EMERGENCY_SWEEP_SECONDS": 3600.0}
    app, socketio = make_app(**config)
    other, _ = make_app(**config)
    ext, other_ext = app.extensions["notify_emergency"], other.extensions["notify_emergency"]
    notify = app.extensions["demo"]["notify"]
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    with app.app_context():
        for i in range(30):  # ids well above the values of flags and small counts in statements
            notify.send(bob, f"offline {i}", "bob has no socket")
    client = app.test_client()
    login(client, "alice")
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    statements: list[tuple[str, str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append((threading.current_thread().name, statement, parameters))

    sa.event.listen(ext.store.engine, "before_cursor_execute", record)
    released: list[int] = []

    def on_fallback(sender: Any, notification: dict[str, Any], reason: str, **_: Any) -> None:
        if reason == "ack-timeout":
            released.append(int(notification["id"]))

    signals.notification_fallback.connect(on_fallback, sender=app, weak=False)
    try:
        with app.app_context():
            here, elsewhere, never = (int(notify.send(alice, f"n{i}", "over the socket")) for i in range(3))
        assert sorted(n["id"] for n in received(sio, EVENT)) == [here, elsewhere, never]
        assert sio.emit(ACK_EVENT, {"id": here}, namespace=NAMESPACE, callback=True)["acknowledged"] == [here]
        with other.app_context():
            assert other_ext.dispatcher.acknowledge(elsewhere, alice)
        wait_until(lambda: released, timeout=30, message="the unacknowledged notification to be released")
        wait_until(lambda: not ext.dispatcher._watch, timeout=30, message="the watcher to finish its batch")
    finally:
        sa.event.remove(ext.store.engine, "before_cursor_execute", record)
        signals.notification_fallback.disconnect(on_fallback, sender=app)
        sio.disconnect(NAMESPACE)

    assert released == [never]
    watcher = [(sql, _values(params)) for name, sql, params in statements if name == "notify-emergency-acks"]
    assert watcher, "the watcher ran no statement at all"
    assert not [sql for sql, values in watcher if here in values]
    assert [sql.split()[0].upper() for sql, values in watcher if elsewhere in values] == ["SELECT"]
    updates = [values for sql, values in watcher if sql.lstrip().upper().startswith("UPDATE")]
    assert updates and all(never in values and elsewhere not in values for values in updates)


def _values(parameters: Any) -> set[int]:
    values = parameters.values() if isinstance(parameters, dict) else parameters or ()
    return {v for v in values if type(v) is int}


# -- one acknowledgement batch: several users, offered and socket rows ----------------------------

def test_one_batch_marks_each_users_rows_by_the_channel_that_showed_them(make_app):
    """One store call with the pairs of two users: a flash offer, a poll offer and a socket
    row each counted by what showed it (a fallback's with one more attempt), each with its
    seconds; a pair naming the wrong owner marks nothing; a second call marks nothing."""
    app, _ = make_app()
    ext = app.extensions["notify_emergency"]
    notify = app.extensions["demo"]["notify"]
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    with app.app_context():
        flashed, plain = (int(notify.send(alice, f"a{i}", "offline")) for i in range(2))
        polled = int(notify.send(bob, "b", "offline"))
        assert [int(r["id"]) for r in ext.store.claim(alice, 1, "flash")] == [flashed]
        assert [int(r["id"]) for r in ext.store.claim(bob, 1, "poll")] == [polled]
        before = {r["id"]: r["attempts"] for r in notification_rows(app)}
        pairs = [(flashed, alice), (polled, bob), (plain, alice), (plain, bob), (polled, alice)]
        marked = ext.store.acknowledge_many(pairs)
        assert {nid: acked.channel for nid, acked in marked.items()} == {
            flashed: "flash", polled: "poll", plain: "realtime"}
        assert all(acked.seconds >= 0 for acked in marked.values())
        assert ext.store.acknowledge_many(pairs) == {}  # exactly once
    rows = {r["id"]: r for r in notification_rows(app)}
    assert {nid: (r["delivered"], r["channel"], r["attempts"] - before[nid]) for nid, r in rows.items()} == {
        flashed: (True, "flash", 1), polled: (True, "poll", 1), plain: (True, "realtime", 0)}
    assert ext.store.hourly.total("n:") == 0
    assert (ext.store.hourly.total("n:flash"), ext.store.hourly.total("n:poll"),
            ext.store.hourly.total("n:realtime")) == (1, 1, 1)


def test_a_row_offered_between_the_read_and_the_update_is_read_again_not_dropped(make_app, tmp_path):
    """SQLite takes its write lock only at the UPDATE: a claim that offers the row (a flash)
    between the acknowledgement's read and its UPDATE makes the UPDATE miss it. The row is
    read again and marked, counted by the flash that offered it, once."""
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'raced.sqlite'}")
    ext = app.extensions["notify_emergency"]
    notify = app.extensions["demo"]["notify"]
    alice = user_id(app, "alice")
    with app.app_context():
        nid = int(notify.send(alice, "raced", "offline"))
    raced: list[int] = []

    def claim_first(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not raced and statement.lstrip().upper().startswith("UPDATE"):
            raced.append(0)  # once: the claim's own UPDATE passes through here too
            raced[:] = [int(r["id"]) for r in ext.store.claim(alice, 5, "flash")]

    sa.event.listen(ext.store.engine, "before_cursor_execute", claim_first)
    try:
        with app.app_context():
            marked = ext.dispatcher.acknowledge_many([nid], alice)
    finally:
        sa.event.remove(ext.store.engine, "before_cursor_execute", claim_first)
    assert raced == [nid], "the claim did not offer the row in between"
    assert marked == [nid]
    [row] = notification_rows(app, id=nid)
    assert (row["delivered"], row["channel"], row["offered_via"]) == (True, "flash", "flash")
    assert (ext.store.hourly.total("n:flash"), ext.store.hourly.total("n:")) == (1, 0)

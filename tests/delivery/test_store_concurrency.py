"""Claiming is exactly-once under contention: many claimers (threads, then processes) racing
for one user's backlog on SQLite, MariaDB and PostgreSQL each get a disjoint share."""

from __future__ import annotations

import multiprocessing
import random
import threading
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from flask_notify_emergency.delivery.fallbacks import claim_for_user
from flask_notify_emergency.learn.metrics import delivery_metrics, parse_window
from tests.conftest import user_id
from tests.support import databases
from tests.support.pages import notification_rows
from tests.support.services import wait_until

BACKLOG = 120
CLAIMERS = 8


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    """SQLite as is; MariaDB and PostgreSQL in a database of this test's own (tables in the
    shared ``test`` database are used by everyone's tests at once)."""
    kind = databases.kind_of(database_url)
    if kind == "sqlite":
        yield database_url
        return
    with databases.own_database(kind) as url:
        yield url


@pytest.fixture
def own_postgres(postgres_url: str) -> Iterator[str]:
    with databases.own_database("postgres") as url:
        yield url


def fill_backlog(app: Any, name: str, count: int) -> set[int]:
    """Half the rows by ``send()``, half by one ``send_many()``: both must be claimed once."""
    notify = app.extensions["demo"]["notify"]
    uid = user_id(app, name)
    with app.app_context():
        ids = {int(notify.send(uid, f"n{i}", "backlog")) for i in range(count // 2)}
        ids |= {int(n) for n in notify.send_many([uid] * (count - count // 2), "bulk", "backlog")}
    return ids


def claim_all(claim: Callable[[int], list[dict[str, Any]]], seed: int) -> list[int]:
    """Claim in random small batches until nothing is left."""
    rng = random.Random(seed)
    got: list[int] = []
    while True:
        rows = claim(rng.randint(1, 7))
        if not rows:
            return got
        got += [int(r["id"]) for r in rows]


def test_concurrent_claimers_deliver_each_notification_exactly_once(own_database, make_app):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=own_database)
    ext = app.extensions["notify_emergency"]
    expected = fill_backlog(app, "alice", BACKLOG)
    fill_backlog(app, "bob", 5)  # never claimed for alice
    uid = user_id(app, "alice")
    results: list[list[int]] = [[] for _ in range(CLAIMERS)]
    errors: list[BaseException] = []
    start = threading.Barrier(CLAIMERS)

    def claimer(i: int) -> None:
        # half claim through the store, half the way pages and polls do
        if i % 2:
            def claim(n: int) -> list[dict[str, Any]]:
                return ext.store.claim(uid, n, "poll")
        else:
            def claim(n: int) -> list[dict[str, Any]]:
                return claim_for_user(ext, uid, n, "flash")
        start.wait()
        try:
            results[i] = claim_all(claim, seed=i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(CLAIMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    claimed = [nid for r in results for nid in r]
    assert len(claimed) == len(set(claimed)), "a notification was claimed twice"
    assert set(claimed) == expected
    if make_url(own_database).get_backend_name() != "sqlite":
        # (SQLite serialises writers; its busy handler lets one claimer win every round)
        assert sum(1 for r in results if r) > 1, "the claimers did not actually race"
    rows = notification_rows(app, user_id=uid)
    # each offered once, by the claimer that got it, and undelivered until confirmed
    by = {nid: ("poll" if i % 2 else "flash") for i, r in enumerate(results) for nid in r}
    assert all(not r["delivered"] and r["offered_via"] == by[r["id"]] for r in rows)
    assert not any(r["delivered"] or r["offered_via"] for r in notification_rows(app, user_id=user_id(app, "bob")))
    # the page confirms what it showed: one batch, counted by the channel that offered each
    confirmed = ext.store.acknowledge_many([(nid, uid) for nid in sorted(expected)])
    assert sorted((nid, acked.channel) for nid, acked in confirmed.items()) == sorted(by.items())
    assert all(acked.seconds >= 0 for acked in confirmed.values())
    rows = notification_rows(app, user_id=uid)
    assert all(r["delivered"] and r["channel"] == by[r["id"]] for r in rows)
    # the hourly totals the racing claims kept say what the rows say
    window = parse_window("24h")
    from_rows = delivery_metrics(ext, window, from_hours=False)
    from_hours = delivery_metrics(ext, window, from_hours=True)
    assert from_hours["by_channel"] == from_rows["by_channel"]
    assert from_rows["by_channel"]["poll"] + from_rows["by_channel"]["flash"] == BACKLOG


def _claim_in_process(database_url: str, name: str, seed: int, start: Any, out: Any) -> None:
    """A worker process: build the app on the shared database and claim until done."""
    from tests.support.apps import build_example

    app, _ = build_example({"SQLALCHEMY_DATABASE_URI": database_url})
    ext = app.extensions["notify_emergency"]
    uid = user_id(app, name)
    start.wait()
    try:
        out.put(("ok", claim_all(lambda n: ext.store.claim(uid, n, "poll"), seed)))
    except BaseException as exc:  # report, the parent asserts
        out.put(("error", repr(exc)))
    finally:
        ext.close()


@pytest.mark.slow
def test_claimers_in_two_processes_deliver_each_notification_exactly_once(own_database, make_app):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=own_database)
    expected = fill_backlog(app, "alice", BACKLOG)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(own_database, "alice", seed, start, out))
             for seed in (1, 2)]
    for p in procs:
        p.start()
    try:
        answers = [out.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.terminate()
    assert [kind for kind, _ in answers] == ["ok", "ok"], answers
    claimed = [nid for _, ids in answers for nid in ids]
    assert len(claimed) == len(set(claimed)), "a notification was claimed twice"
    assert set(claimed) == expected


def test_a_claim_that_loses_its_rows_to_another_claimer_takes_the_next_ones(own_postgres, make_app):
    """Deterministic on PostgreSQL: another transaction holds the first rows while our claim
    waits for them, then commits; the claim must come back with the rows still waiting."""
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=own_postgres)
    ext = app.extensions["notify_emergency"]
    ids = sorted(fill_backlog(app, "alice", 6))
    uid = user_id(app, "alice")
    t = ext.models.Notification.__table__
    result: list[list[dict[str, Any]]] = []

    with ext.engine.connect() as other:
        tx = other.begin()
        other.execute(t.update().where(t.c.id.in_(ids[:3])).values(delivered=True, channel="poll"))
        claimer = threading.Thread(target=lambda: result.append(ext.store.claim(uid, 3, "flash")))
        claimer.start()
        # autocommit: PostgreSQL keeps one statistics snapshot per transaction
        with ext.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watch:
            def waiting_on_a_lock() -> bool:
                return bool(watch.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")).scalar())
            wait_until(waiting_on_a_lock, timeout=10, message="the claim to wait for the held rows")
        tx.commit()
    claimer.join(10)
    assert [r["id"] for r in result[0]] == ids[3:]

"""Acknowledgements survive contention: 8 ackers racing over 1,000 notifications on MariaDB and
on PostgreSQL (each in a database of the test's own), while a claimer polls the same users.

Every notification ends delivered exactly once (one ack took it; a claim only offers it, and
an ack of an offered row counts it for the poll), no row is offered twice while its offer
waits for confirmation, and no ack is dropped: a deadlock or serialization failure is
retried, never returned as an error.
"""

from __future__ import annotations

import random
import threading
from typing import Any, Iterator

import pytest

from flask_notify_emergency.delivery.store import is_contention
from tests.conftest import user_id
from tests.support import databases
from tests.support.pages import notification_rows

NOTIFICATIONS = 1000
ACKERS = 8
USERS = ("alice", "bob")


@pytest.fixture(params=["mariadb", "postgres"])
def racing_database(request: pytest.FixtureRequest) -> Iterator[str]:
    with databases.own_database(request.param) as url:
        yield url


@pytest.mark.parametrize("isolation", ["default", "SERIALIZABLE"])
def test_racing_acks_deliver_each_notification_once_and_drop_none(racing_database, isolation, make_app):
    """On the server's default isolation, and on SERIALIZABLE (which some hosts run and where
    an ack racing a claim for the same row gets a serialization failure to retry)."""
    engine_options: dict[str, Any] = {"pool_size": 12}
    if isolation != "default":
        engine_options["isolation_level"] = isolation
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=racing_database, SQLALCHEMY_ENGINE_OPTIONS=engine_options,
                      NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT=3600)
    ext = app.extensions["notify_emergency"]
    owners = {name: user_id(app, name) for name in USERS}
    owner_of: dict[int, str] = {}
    with app.app_context():
        for i in range(NOTIFICATIONS):
            uid = owners[USERS[i % len(USERS)]]
            owner_of[int(ext.dispatcher.send(uid, f"n{i}", "racing acks"))] = uid
    ids = sorted(owner_of)

    acked: list[list[int]] = [[] for _ in range(ACKERS)]
    claimed: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(ACKERS + 1)

    def acker(i: int) -> None:
        # each acker acks every notification: first its own share (neighbouring rows of the
        # same users as the other ackers' shares, where gap locks collide), then all the rest
        rng = random.Random(i)
        mine = ids[i::ACKERS]
        rest = sorted(set(ids) - set(mine))
        rng.shuffle(mine)
        rng.shuffle(rest)
        order = mine + rest
        start.wait()
        try:
            with app.app_context():
                for nid in order:
                    if ext.dispatcher.acknowledge(nid, owner_of[nid]):
                        acked[i].append(nid)
        except BaseException as exc:
            errors.append(exc)

    def claimer() -> None:
        start.wait()
        try:
            with app.app_context():
                for _ in range(40):
                    for uid in owners.values():
                        claimed.extend(int(r["id"]) for r in ext.store.claim(uid, 5, "poll"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=acker, args=(i,)) for i in range(ACKERS)]
    threads.append(threading.Thread(target=claimer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    assert errors == [], f"an ack or claim failed instead of being retried: {errors[:3]!r}"

    taken = [nid for a in acked for nid in a]
    assert len(taken) == len(set(taken)), "a notification was delivered twice"
    assert sorted(taken) == ids, "a notification was never delivered"
    assert len(claimed) == len(set(claimed)), "a notification was offered twice while its offer waited"
    assert sum(1 for a in acked if a) > 1, "the ackers did not actually race"
    rows = {r["id"]: r for uid in owners.values() for r in notification_rows(app, user_id=uid)}
    assert all(r["delivered"] for r in rows.values())
    by_poll = {nid for nid, r in rows.items() if r["channel"] == "poll"}
    assert by_poll <= set(claimed)
    assert {nid for nid, r in rows.items() if r["channel"] == "realtime"} == set(ids) - by_poll


def test_an_ack_for_another_users_notification_changes_nothing(make_app):
    app, _ = make_app()
    ext = app.extensions["notify_emergency"]
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    with app.app_context():
        nid = ext.dispatcher.send(alice, "t", "m")
        assert ext.dispatcher.acknowledge(nid, bob) is False
        assert ext.dispatcher.acknowledge(nid + 1000, alice) is False
    assert [r["delivered"] for r in notification_rows(app, user_id=alice)] == [False]
    with app.app_context():
        assert ext.dispatcher.acknowledge(nid, alice) is True
        assert ext.dispatcher.acknowledge(nid, alice) is False


def test_only_deadlocks_and_serialization_failures_count_as_contention():
    import sqlalchemy as sa

    class PgError(Exception):
        def __init__(self, pgcode: str) -> None:
            super().__init__("x")
            self.pgcode = pgcode

    assert is_contention(sa.exc.OperationalError("UPDATE", {}, PgError("40P01")))
    assert is_contention(sa.exc.OperationalError("UPDATE", {}, PgError("40001")))
    assert is_contention(sa.exc.OperationalError("UPDATE", {}, Exception(1213, "Deadlock found")))
    assert not is_contention(sa.exc.OperationalError("UPDATE", {}, Exception(2003, "Can't connect")))
    assert not is_contention(sa.exc.IntegrityError("INSERT", {}, PgError("23505")))
    assert not is_contention(ValueError("no"))

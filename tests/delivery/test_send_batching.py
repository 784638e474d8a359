"""Sends arriving together in one worker store their rows in one transaction; each send still
gets its own id, or its own error."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from tests.conftest import user_id
from tests.support import databases
from tests.support.pages import notification_rows
from tests.support.services import wait_until

QUEUED = 5
#: The state is read from the table once, before it is locked, and not again during a test.
CONFIG = {"NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 3600.0}


@pytest.fixture(params=["mariadb", "postgres"])
def server_database(request: pytest.FixtureRequest) -> Iterator[str]:
    with databases.own_database(request.param) as url:
        yield url


@pytest.fixture
def mariadb_database() -> Iterator[str]:
    with databases.own_database("mariadb") as url:
        yield url


class TableLock:
    """Another session holding the notifications table so that no row can be inserted."""

    def __init__(self, url: str, table: str) -> None:
        self.engine = sa.create_engine(url)
        self.conn = self.engine.connect()
        if databases.kind_of(url) == "mariadb":
            self.conn.exec_driver_sql(f"LOCK TABLES {table} WRITE")
        else:
            self.conn.exec_driver_sql(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        self.mariadb = databases.kind_of(url) == "mariadb"

    def release(self) -> None:
        if self.conn is None:
            return
        if self.mariadb:
            self.conn.exec_driver_sql("UNLOCK TABLES")
        self.conn.rollback()
        self.conn.close()
        self.engine.dispose()
        self.conn = None


def send_while_locked(app: Any, url: str, sends: list[dict[str, Any]]) -> list[Any]:
    """The first send runs alone and waits on the lock; the others queue behind it meanwhile,
    then run as one batch when the lock goes. Each send's id, or the exception it raised."""
    ext = app.extensions["notify_emergency"]
    notify, creates = app.extensions["demo"]["notify"], ext.dispatcher._creates
    outcomes: list[Any] = [None] * len(sends)

    def send(k: int) -> None:
        with app.app_context():
            try:
                outcomes[k] = notify.send(**sends[k])
            except Exception as exc:  # reported to the test
                outcomes[k] = exc

    with app.app_context():  # the state's first read of the table, before it is locked
        notify.send(sends[0]["user_id"], "warm-up", "read the state")
    batches, items = creates.batches, creates.items
    lock = TableLock(url, ext.models.Notification.__table__.name)
    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(sends))]
    try:
        threads[0].start()
        wait_until(lambda: creates.batches == batches + 1, timeout=10, message="the first send to run its batch")
        for t in threads[1:]:
            t.start()
        wait_until(lambda: len(creates._queue) == len(sends) - 1, timeout=10,
                   message="the other sends to queue behind it")
    finally:
        lock.release()
    for t in threads:
        t.join(30)
    assert (creates.batches - batches, creates.items - items) == (2, len(sends))
    return outcomes


def test_sends_queued_together_share_one_transaction_and_each_gets_its_own_row(server_database, make_app):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=server_database, **CONFIG)
    alice, bob = user_id(app, "alice"), user_id(app, "bob")
    sends = [{"user_id": alice if k % 2 else bob, "title": f"n{k}", "message": f"batched {k}"}
             for k in range(QUEUED + 1)]
    ids = send_while_locked(app, server_database, sends)
    assert all(isinstance(nid, int) for nid in ids), ids
    rows = {row["id"]: row for row in notification_rows(app) if row["title"] != "warm-up"}
    assert sorted(rows) == sorted(ids)  # each once
    for nid, sent in zip(ids, sends):
        assert (rows[nid]["user_id"], rows[nid]["title"], rows[nid]["message"]) == \
            (sent["user_id"], sent["title"], sent["message"])
    hourly = app.extensions["notify_emergency"].store.hourly
    assert hourly.total("n:") == len(sends) + 1  # and the warm-up


def test_a_row_the_database_refuses_fails_only_its_own_send(mariadb_database, make_app):
    """A host's notifications table in the 3-byte character set of older MariaDB tables: a
    title with an emoji cannot be stored. Queued with others, that send gets the database's
    error and the others are stored, once each."""
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=mariadb_database, **CONFIG)
    ext = app.extensions["notify_emergency"]
    table = ext.models.Notification.__table__.name
    with ext.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {table} MODIFY title VARCHAR(500) CHARACTER SET utf8mb3 NOT NULL")
    alice = user_id(app, "alice")
    sends = [{"user_id": alice, "title": "\U0001F514 bell" if k == 3 else f"plain {k}", "message": "m"}
             for k in range(QUEUED + 1)]
    outcomes = send_while_locked(app, mariadb_database, sends)
    refused = [k for k, got in enumerate(outcomes) if not isinstance(got, int)]
    assert refused == [3] and isinstance(outcomes[3], sa.exc.DBAPIError), outcomes
    assert "Incorrect string value" in str(outcomes[3])
    stored = sorted((row["id"], row["title"]) for row in notification_rows(app) if row["title"] != "warm-up")
    assert stored == sorted((outcomes[k], sends[k]["title"]) for k in range(len(sends)) if k != 3)
    assert ext.store.hourly.total("n:") == len(sends)  # with the warm-up

"""The store's own pool on a database server: connections opened once and kept, no round trip
that does nothing, and nothing of one transaction left for the next user of its connection."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tests.conftest import user_id

SENDS = 10


def _session_counts(engine: sa.engine.Engine) -> dict[str, int]:
    """MariaDB's statement counters of the one pooled connection (this read counts one rollback:
    its own connection's, when it closes)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SHOW SESSION STATUS WHERE Variable_name IN ('Com_commit', 'Com_rollback', 'Com_insert')").all()
    return {str(name): int(value) for name, value in rows}


def test_a_send_commits_once_and_its_connection_goes_back_without_another_rollback(make_app, mariadb_url):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=mariadb_url, NOTIFY_EMERGENCY_DATABASE_POOL_SIZE=1,
                      NOTIFY_EMERGENCY_SWEEP_SECONDS=3600.0)
    ext = app.extensions["notify_emergency"]
    engine = ext.store.engine
    assert engine is not ext.engine and engine.pool.size() == 1
    notify, alice = app.extensions["demo"]["notify"], user_id(app, "alice")
    with app.app_context():
        notify.send(alice, "Warm-up", "The pool's one connection is open.")
        before = _session_counts(engine)
        for k in range(SENDS):
            notify.send(alice, f"Report {k}", "Ready.")
        after = _session_counts(engine)
    done = {name: after[name] - before[name] for name in before}
    # each send: its INSERT (and the hourly totals' upsert) and one COMMIT; the only rollback
    # is the one of the first counting read's connection
    assert done["Com_commit"] == SENDS, done
    assert done["Com_rollback"] == 1, done
    assert done["Com_insert"] >= SENDS, done


def test_a_transaction_left_open_is_rolled_back_before_its_connection_is_used_again(make_app, mariadb_url):
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=mariadb_url, NOTIFY_EMERGENCY_DATABASE_POOL_SIZE=1,
                      NOTIFY_EMERGENCY_SWEEP_SECONDS=3600.0)
    ext = app.extensions["notify_emergency"]
    engine, table = ext.store.engine, ext.models.Banner.__table__

    def banner(conn: Any) -> None:
        conn.execute(table.insert().values(message="never committed", level="info", kind="broadcast",
                                           created_at=sa.func.now()))

    conn = engine.connect()
    banner(conn)
    assert conn.exec_driver_sql("SELECT @@in_transaction").scalar() == 1
    conn.close()  # neither committed nor rolled back by its user
    with engine.connect() as again:  # the same pooled connection
        assert again.exec_driver_sql("SELECT @@in_transaction").scalar() == 0
        assert again.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


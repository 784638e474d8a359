"""Databases of a test's own on the shared MariaDB and PostgreSQL servers.

Tables in the shared ``test`` database are used by everyone's tests at once, so a test that
needs tables nobody else touches (metrics from known rows, claims under contention, a
database cut off by a proxy) makes a database named ``ne_<random>`` and drops it afterwards.
A server that cannot be reached skips the test locally and fails it in CI
(:func:`tests.support.services.unavailable`).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Iterator

import sqlalchemy as sa

from tests.support import services

#: The shared servers, by kind (the database in each URL is the shared ``test``).
SERVER_URLS = {"mariadb": services.MARIADB_URL, "postgres": services.POSTGRES_URL}
#: SQLAlchemy backend name -> our kind.
BACKENDS = {"sqlite": "sqlite", "mysql": "mariadb", "mariadb": "mariadb", "postgresql": "postgres"}


def kind_of(url: str) -> str:
    """``sqlite``, ``mariadb`` or ``postgres`` for a database URL."""
    return BACKENDS[sa.engine.make_url(url).get_backend_name()]


def server(kind: str) -> sa.engine.Engine:
    """An autocommit engine on the shared server of ``kind`` (skip or fail if unreachable)."""
    engine = sa.create_engine(SERVER_URLS[kind], isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        services.unavailable(f"{kind} at {sa.engine.make_url(SERVER_URLS[kind]).render_as_string()}", exc)
    return engine


def _drop(engine: sa.engine.Engine, kind: str, name: str) -> None:
    with engine.connect() as conn:
        # PostgreSQL refuses to drop a database with sessions left (a pool, a killed process)
        force = " WITH (FORCE)" if kind == "postgres" else ""
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))


@contextlib.contextmanager
def own_database(kind: str, tmp_path: Any = None) -> Iterator[str]:
    """The URL of a new, empty database of ``kind``, dropped afterwards.

    MariaDB and PostgreSQL: ``ne_<random>`` on the shared server. SQLite: a new file in
    ``tmp_path`` (which it then needs).
    """
    if kind == "sqlite":
        if tmp_path is None:
            raise ValueError("own_database('sqlite') needs tmp_path for the file.")
        yield f"sqlite:///{tmp_path / f'ne_{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    name = f"ne_{uuid.uuid4().hex[:12]}"
    engine = server(kind)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        try:
            yield sa.engine.make_url(SERVER_URLS[kind]).set(database=name).render_as_string(hide_password=False)
        finally:
            _drop(engine, kind, name)
    finally:
        engine.dispose()


@contextlib.contextmanager
def database_with_password(kind: str) -> Iterator[tuple[str, str]]:
    """(url, password) of a new database owned by a new user with a password; both dropped after."""
    user, password = f"ne_u_{uuid.uuid4().hex[:8]}", f"pw{uuid.uuid4().hex}"
    engine = server(kind)
    try:
        with own_database(kind) as url:
            name = sa.engine.make_url(url).database
            with engine.connect() as conn:
                if kind == "mariadb":
                    conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
                    conn.execute(sa.text(f"GRANT ALL PRIVILEGES ON {name}.* TO '{user}'@'%'"))
                else:
                    conn.execute(sa.text(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'"))
                    conn.execute(sa.text(f"ALTER DATABASE {name} OWNER TO {user}"))
            try:
                yield (sa.engine.make_url(url).set(username=user, password=password)
                       .render_as_string(hide_password=False), password)
            finally:
                if kind == "postgres":  # the role's sessions must end before it can go
                    _drop(engine, kind, str(name))
    finally:
        with engine.connect() as conn:
            if kind == "mariadb":
                conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
            else:
                conn.execute(sa.text(f"DROP ROLE IF EXISTS {user}"))
        engine.dispose()

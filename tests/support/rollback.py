"""What the backup and rollback tests share: databases of their own on the shared servers,
an app factory for ``flask --app`` subprocesses, and snapshots of every table."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from typing import Any, Iterator

import sqlalchemy as sa

from tests.support import services

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_ENV = "NE_TEST_APP_CONFIG"
SERVER_URLS = {"mariadb": services.MARIADB_URL, "postgres": services.POSTGRES_URL}


def _server(kind: str) -> sa.engine.Engine:
    engine = sa.create_engine(SERVER_URLS[kind], isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        services.unavailable(kind, exc)
    return engine


@contextlib.contextmanager
def own_database(kind: str, tmp_path: Any = None) -> Iterator[str]:
    """A database named ``ne_<random>`` on the shared server, dropped afterwards (SQLite: a file)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'ne_{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    name = f"ne_{uuid.uuid4().hex[:12]}"
    server = _server(kind)
    with server.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield sa.engine.make_url(SERVER_URLS[kind]).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            if kind == "postgres":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        server.dispose()


@contextlib.contextmanager
def database_with_password(kind: str) -> Iterator[tuple[str, str]]:
    """(url, password) of a database owned by a new user with a password; both dropped after."""
    user, password = f"ne_u_{uuid.uuid4().hex[:8]}", f"pw{uuid.uuid4().hex}"
    server = _server(kind)
    try:
        with own_database(kind) as url:
            name = sa.engine.make_url(url).database
            with server.connect() as conn:
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
                if kind == "postgres":
                    with server.connect() as conn:  # the role's sessions must end before it can go
                        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        with server.connect() as conn:
            if kind == "mariadb":
                conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
            else:
                conn.execute(sa.text(f"DROP ROLE IF EXISTS {user}"))
        server.dispose()


def cli_app() -> Any:
    """``flask --app tests.support.rollback:cli_app``: the example app, config from the environment."""
    from tests.support.apps import build_example

    app, _ = build_example(json.loads(os.environ[CONFIG_ENV]))
    return app


def cli_env(config: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env[CONFIG_ENV] = json.dumps(config)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def snapshot(app: Any) -> dict[str, dict[Any, dict[str, Any]]]:
    """Every row of every extension table, by table name and primary key."""
    ext = app.extensions["notify_emergency"]
    out: dict[str, dict[Any, dict[str, Any]]] = {}
    with ext.engine.connect() as conn:
        for model in ext.models.all:
            table = model.__table__
            pk = list(table.primary_key.columns)[0].name
            out[table.name] = {r._mapping[pk]: {k: _plain(v) for k, v in r._mapping.items()}
                               for r in conn.execute(sa.select(table))}
    return out


def wipe(app: Any) -> None:
    """Delete every row of every extension table (the tables stay)."""
    ext = app.extensions["notify_emergency"]
    with ext.engine.begin() as conn:
        for model in ext.models.all:
            conn.execute(model.__table__.delete())


def cli(app: Any, *args: str) -> Any:
    """Run ``flask emergency ARGS`` in the app's CLI runner."""
    return app.test_cli_runner().invoke(args=["emergency", *args])

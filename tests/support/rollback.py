"""What the backup and rollback tests share: an app factory for ``flask --app``
subprocesses, and snapshots of every table. (Databases of their own: :mod:`.databases`.)"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_ENV = "NE_TEST_APP_CONFIG"


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

"""Running ``flask emergency ...`` the way an operator does, and reading what it left behind."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa


def invoke(app: Any, *args: str) -> Any:
    """Run ``flask emergency <args>`` through the app's CLI runner.

    A crash inside a command is a test failure (not an exit code to assert on).
    """
    result = app.test_cli_runner().invoke(args=["emergency", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"'emergency {' '.join(args)}' crashed:\n{result.output}") from result.exception
    return result


def invoke_json(app: Any, *args: str) -> tuple[int, dict[str, Any]]:
    """Run a command with ``--json``; return (exit code, the JSON object it printed)."""
    result = invoke(app, *args, "--json")
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"'emergency {' '.join(args)} --json' printed no JSON:\n{result.output}") from None


def audit_rows(app: Any, action: str | None = None) -> list[dict[str, Any]]:
    """Audit entries, oldest first (optionally of one action)."""
    ext = app.extensions["notify_emergency"]
    t = ext.models.AuditEntry.__table__
    q = sa.select(t).order_by(t.c.id)
    if action:
        q = q.where(t.c.action == action)
    with ext.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def event_rows(app: Any) -> list[dict[str, Any]]:
    """Emergency events, oldest first."""
    ext = app.extensions["notify_emergency"]
    t = ext.models.EmergencyEvent.__table__
    with ext.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def stored_switch(app: Any, key: str, default: Any = None) -> Any:
    """A switch as the database holds it (the cluster's truth)."""
    return app.extensions["notify_emergency"].control.read(key, default)


def dead_queue_app(make_app: Any, **config: Any) -> tuple[Any, Any]:
    """The example app whose Socket.IO message queue points at a closed port: the
    real-time health check (its canary) fails, as when the socket queue is down."""
    from tests.support.services import free_port

    config.setdefault("SOCKETIO_MESSAGE_QUEUE", f"redis://127.0.0.1:{free_port()}/0")
    config.setdefault("NOTIFY_EMERGENCY_CANARY_TIMEOUT", 0.5)
    config.setdefault("NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT", 1.0)
    return make_app(**config)  # type: ignore[no-any-return]


def flask_process(config: dict[str, Any], *args: str, timeout: float = 120) -> Any:
    """``flask emergency <args>`` in a process of its own, as an operator runs it, on the
    example app built from ``config`` (``tests/support/flask_app.py``)."""
    import os
    import subprocess
    import sys

    from tests.support.apps import EXAMPLES, ROOT

    full = {"SECRET_KEY": "test-secret", "NOTIFY_EMERGENCY_MONITOR_ENABLED": False, **config}
    env = dict(os.environ, SERVE_CONFIG=json.dumps(full), PYTHONPATH=os.pathsep.join([ROOT, EXAMPLES]))
    return subprocess.run([sys.executable, "-m", "flask", "--app", "tests.support.flask_app:create",
                           "emergency", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

"""``flask emergency ...``: the runbook's commands, acting on the cluster's shared state.

Each module below adds the commands of one concern to :data:`emergency_group`. Commands
run in the app context of the host app (``flask --app yourapp emergency status``), so they
use the same database and Redis as the running workers.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
from flask.cli import AppGroup

from .command import EmergencyCommand

#: The command group; added to ``app.cli`` under ``NOTIFY_EMERGENCY_CLI_GROUP``.
emergency_group = AppGroup("emergency", help="Notification emergency procedures (see the runbook).")
# every command gets --verbose, the command log and one-line errors (see .command)
emergency_group.command_class = EmergencyCommand

#: Modules that contribute commands, in the order their commands were written.
COMMAND_MODULES = ("status", "emergency", "recovery", "rollback", "communication", "drills", "metrics",
                   "backups", "validation", "monitor", "scripts")

_loaded = False


def _load_commands() -> None:
    global _loaded
    if _loaded:
        return
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    _loaded = True


def init_app(app: Any, ext_state: Any) -> None:
    """Add the group to ``app.cli`` under its configured name (None: no CLI)."""
    name = app.config["NOTIFY_EMERGENCY_CLI_GROUP"]
    if not name:
        return
    _load_commands()
    if name == emergency_group.name:
        app.cli.add_command(emergency_group)
    else:
        app.cli.add_command(emergency_group, name=name)


__all__ = ["click", "emergency_group", "init_app"]

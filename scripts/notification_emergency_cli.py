#!/usr/bin/env python3
"""The runbook's entry point: ``python scripts/notification_emergency_cli.py X ...`` runs
``flask --app APP emergency X ...`` with the same arguments, so every runbook line works
as written. Installed, the same command is ``notify-emergency X ...``
(:mod:`flask_notify_emergency.cli.console`).

Which app: ``--app APP`` as the first argument, else the ``FLASK_APP`` environment
variable (both take what ``flask --app`` takes: ``module``, ``module:app``,
``module:create_app()``, or a path to a ``.py`` file). The command group is
``emergency`` unless ``NOTIFY_EMERGENCY_CLI_GROUP`` names another, as the app's
``NOTIFY_EMERGENCY_CLI_GROUP`` setting may.

Examples::

    export FLASK_APP=myapp:create_app()
    python scripts/notification_emergency_cli.py status --json
    python scripts/notification_emergency_cli.py --app myapp activate-emergency \\
        --reason "Critical notification system failure" --triggered-by "$(whoami)"

Exit codes are the command's own: 0 done, 1 failed or refused, 2 bad input (3 from
``health-check`` when degraded).
"""

from __future__ import annotations

import os
import sys

# run from a checkout without installing: the package is beside this folder
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flask_notify_emergency.cli.console import USAGE, flask_argv as _flask_argv  # noqa: E402
from flask_notify_emergency.cli.console import main as _main  # noqa: E402

PROG = "notification_emergency_cli.py"

__all__ = ["USAGE", "flask_argv", "main"]


def flask_argv(argv: list[str], environ: dict[str, str]) -> list[str]:
    """The ``flask`` command line for our arguments (see the package's ``console`` module)."""
    return _flask_argv(argv, environ, prog=PROG)


def main(argv: list[str] | None = None) -> None:
    """Run the ``flask emergency`` command; exits with its exit code."""
    _main(argv, prog=PROG)


if __name__ == "__main__":
    main()

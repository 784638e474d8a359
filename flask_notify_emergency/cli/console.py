"""``notify-emergency``: the console command installed with the package.

``notify-emergency X ...`` runs ``flask --app APP emergency X ...`` with the same arguments,
so every runbook line (``python scripts/notification_emergency_cli.py X``) works without the
checkout. The runbook's script in ``scripts/`` is a shim to :func:`main`.

Which app: ``--app APP`` as the first argument, else the ``FLASK_APP`` environment variable
(both take what ``flask --app`` takes: ``module``, ``module:app``, ``module:create_app()``,
or a path to a ``.py`` file). The command group is ``emergency`` unless
``NOTIFY_EMERGENCY_CLI_GROUP`` in the environment names another (as the app's own
``NOTIFY_EMERGENCY_CLI_GROUP`` setting may).

Exit codes are the command's own: 0 done, 1 failed or refused, 2 bad input (3 from
``health-check`` when degraded).
"""

from __future__ import annotations

import os
import sys

USAGE = ("usage: {prog} [--app APP] COMMAND [OPTIONS]\n"
         "  APP: what 'flask --app' takes (module, module:app, module:create_app()); default $FLASK_APP.\n"
         "  COMMAND: any 'flask emergency' command, e.g. status, health-check, activate-emergency.\n"
         "  Run with --help after the app to list the commands.")


def flask_argv(argv: list[str], environ: dict[str, str], prog: str = "notify-emergency") -> list[str]:
    """The ``flask`` command line for our arguments; SystemExit(2) with a message if the
    app is not named."""
    args = list(argv)
    app = None
    usage = USAGE.format(prog=prog)
    if args and args[0] == "--app":
        if len(args) < 2:
            raise SystemExit(f"--app needs a value, e.g. --app myapp:create_app()\n{usage}")
        app, args = args[1], args[2:]
    elif args and args[0].startswith("--app="):
        app, args = args[0].split("=", 1)[1], args[1:]
    app = app or environ.get("FLASK_APP")
    if not app:
        print("Error: which app? Pass --app APP first, or set FLASK_APP "
              "(e.g. export FLASK_APP=myapp:create_app()).", file=sys.stderr)
        print(usage, file=sys.stderr)
        raise SystemExit(2)
    group = environ.get("NOTIFY_EMERGENCY_CLI_GROUP") or "emergency"
    return ["flask", "--app", app, group, *args]


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run the ``flask emergency`` command; exits with its exit code."""
    name = prog or os.path.basename(sys.argv[0]) or "notify-emergency"
    args = flask_argv(sys.argv[1:] if argv is None else argv, dict(os.environ), prog=name)
    # the app module is found relative to where the operator stands, as with 'flask'
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    from flask.cli import main as flask_main

    sys.argv = args
    flask_main()


if __name__ == "__main__":
    main()

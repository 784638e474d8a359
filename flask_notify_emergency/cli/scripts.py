"""``rollback-script``: the runbook's rollback script, shipped inside the package.

The script (``rollback_notification_system.sh`` beside this module; ``scripts/`` of a
checkout links to it) only runs ``flask emergency`` commands in order and logs them. An
installed package has no ``scripts/`` folder, so this command says where the shipped copy
is, or writes it out where the operator wants it::

    notify-emergency rollback-script --output rollback_notification_system.sh
    FLASK_APP='myapp:create_app()' ./rollback_notification_system.sh --reason "why"
"""

from __future__ import annotations

import os
import shutil
import stat

import click

from . import emergency_group
from .output import fail, json_option, report

#: The rollback script as installed with the package.
ROLLBACK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rollback_notification_system.sh")


@emergency_group.command("rollback-script")
@click.option("--output", "output", type=click.Path(dir_okay=False),
              help="Write an executable copy of the script to this file.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@json_option
def rollback_script_command(output: str | None, force: bool, as_json: bool) -> None:
    """Print where the runbook's rollback script is installed, or write a copy (--output)."""
    if not os.path.isfile(ROLLBACK_SCRIPT):
        fail(f"the rollback script is missing from the installed package ({ROLLBACK_SCRIPT}); "
             "reinstall flask-notify-emergency.", as_json=as_json)
    if output is None:
        report({"ok": True, "path": ROLLBACK_SCRIPT}, as_json, [ROLLBACK_SCRIPT])
        return
    if os.path.exists(output) and not force:
        fail(f"{output} exists; add --force to overwrite it, or choose another --output.", as_json=as_json)
    shutil.copyfile(ROLLBACK_SCRIPT, output)
    mode = os.stat(output).st_mode
    os.chmod(output, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    report({"ok": True, "path": os.path.abspath(output), "source": ROLLBACK_SCRIPT}, as_json,
           [f"Wrote {os.path.abspath(output)}",
            f"Run it: FLASK_APP=yourapp {output} --reason \"why\" [--dry-run]"])

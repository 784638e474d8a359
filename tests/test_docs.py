"""The README stays true: its configuration table is generated from config.py, and the
example app's command lines it shows work as typed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from flask_notify_emergency import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_APP = "examples/app.py:flask_app"


def test_readme_config_table_is_current():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert config.TABLE_START in readme and config.TABLE_END in readme
    assert config.readme_with_table(readme) == readme, (
        "README.md's configuration table is stale: run "
        "'python -m flask_notify_emergency.config --write-readme README.md'")


def test_every_setting_is_documented_once():
    names = [s.name for s in config.SETTINGS]
    assert len(names) == len(set(names))
    assert all(s.doc.strip() for s in config.SETTINGS)


def _run(argv: list[str], tmp_path: Any) -> subprocess.CompletedProcess[str]:
    """A command typed in the checkout, on a database of the test's own (not the demo's)."""
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'readme.sqlite'}")
    env.pop("FLASK_APP", None)
    env.pop("NOTIFY_EMERGENCY_REDIS_URL", None)
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_readme_cli_lines_run_against_the_example_app(tmp_path):
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert f"flask --app {EXAMPLE_APP} emergency status" in readme
    assert f"python scripts/notification_emergency_cli.py --app {EXAMPLE_APP}" in readme

    direct = _run([flask if os.path.exists(flask) else "flask", "--app", EXAMPLE_APP, "emergency",
                   "status", "--json"], tmp_path)
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout)["mode"] == "normal"

    shim = _run([sys.executable, "scripts/notification_emergency_cli.py", "--app", EXAMPLE_APP,
                 "activate-emergency", "--reason", "README check", "--json"], tmp_path)
    assert shim.returncode == 0, shim.stderr
    assert json.loads(shim.stdout)["mode"] == "emergency"

    after = _run([flask if os.path.exists(flask) else "flask", "--app", EXAMPLE_APP, "emergency",
                  "status", "--json"], tmp_path)
    assert json.loads(after.stdout)["mode"] == "emergency"

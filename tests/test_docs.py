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


def _reasons_used_in_code() -> set[str]:
    """Every ``reason`` the package hands to ``notification_fallback``: literal arguments of
    ``.fallback(payload, reason)`` and ``notification_fallback.send(..., reason=...)``,
    module constants passed there, and what ``Dispatcher.route`` / ``route_all`` return."""
    import ast

    from flask_notify_emergency.config import MODES

    package = os.path.join(ROOT, "flask_notify_emergency")
    found: set[str] = set()
    for folder, _, files in os.walk(package):
        for name in files:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                         and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                         for t in n.targets if isinstance(t, ast.Name)}

            def value(node: ast.AST) -> str | None:
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    return node.value
                if isinstance(node, ast.Name):
                    return constants.get(node.id)
                return None

            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    args = []
                    if node.func.attr == "fallback" and len(node.args) == 2:
                        args.append(node.args[1])
                    if node.func.attr == "send" and "notification_fallback" in ast.unparse(node.func):
                        args += [k.value for k in node.keywords if k.arg == "reason"]
                    found.update(v for v in map(value, args) if v)
                if isinstance(node, ast.FunctionDef) and node.name in ("route", "route_all"):
                    for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None):
                        if isinstance(ret.value, ast.JoinedStr):  # f"mode-{mode}"
                            found.update(f"mode-{m}" for m in MODES if m != "normal")
                        elif value(ret.value):
                            found.add(value(ret.value) or "")
    return found


def test_the_fallback_reasons_documented_are_the_ones_the_code_sends():
    import re

    with open(os.path.join(ROOT, "flask_notify_emergency", "signals.py"), encoding="utf-8") as fh:
        source = fh.read()
    comment = source.split("notification_fallback = ")[0].rsplit("notification_failed = ", 1)[1]
    in_signals = set(re.findall(r"'([a-z-]+)'", comment))
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        row = next(line for line in fh if line.startswith("| `notification_fallback` |"))
    in_readme = set(re.findall(r"`([a-z-]+)`", row.split("`reason`", 1)[1]))
    in_readme -= {"clear-queues", "send-user-notification", "test-fallback"}  # the commands named
    used = _reasons_used_in_code()
    assert {"offline", "ack-timeout", "queue-cleared", "requested", "test", "mode-legacy"} <= used
    assert in_signals == used
    assert in_readme == used

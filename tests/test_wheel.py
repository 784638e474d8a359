"""The wheel carries everything: build it, install it in a clean venv (no site packages, no
checkout on the path), render the example app's page with its templates and static files, and
run the runbook from it: the ``notify-emergency`` console command and the rollback script it
writes out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support import surface
from tests.support.apps import ROOT

pytestmark = pytest.mark.slow

#: What a build does not need from the checkout.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "dist", "*.egg-info",
                                     "__pycache__", ".pytest_cache", "instance", "*.sqlite", "bench",
                                     "test-artifacts", "tests", "scripts", "docs")

PAGE_CHECK = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "examples"))
    import flask_notify_emergency
    from app import create_app

    where = os.path.dirname(flask_notify_emergency.__file__)
    assert where.startswith(sys.prefix), f"imported from {where}, not the venv {sys.prefix}"
    app, _ = create_app({
        "TESTING": True, "SECRET_KEY": "wheel-check",
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + os.path.join(os.getcwd(), "wheel.sqlite"),
        "NOTIFY_EMERGENCY_MONITOR_ENABLED": False,
    })
    client = app.test_client()
    assert client.post("/login", data={"username": "alice", "password": "alice"}).status_code == 302
    page = client.get("/").get_data(as_text=True)
    for needle in ('id="notify-emergency-banners"', 'id="notify-emergency-settings"',
                   '/emergency/static/client.js', '/emergency/static/vendor/socket.io.min.js',
                   '/emergency/static/notify-emergency.css'):
        assert needle in page, needle
    for path, marker in (("/emergency/static/client.js", "notify-emergency"),
                         ("/emergency/static/vendor/socket.io.min.js", "engine.io"),
                         ("/emergency/static/notify-emergency.css", "notify-emergency")):
        response = client.get(path)
        assert response.status_code == 200, path
        assert marker in response.get_data(as_text=True), path
    # Flask-Babel is optional: without it the client's texts are English
    import importlib.util
    assert importlib.util.find_spec("flask_babel") is None
    assert '"dismiss": "Dismiss"' in page
    print("WHEEL-PAGE-OK", where)
''')


def run(args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: Any) -> Path:
    """A wheel built from a copy of the checkout (the build writes next to its sources)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(source)], cwd=work)
    (built,) = (work / "dist").glob("flask_notify_emergency-*.whl")
    return built


def test_the_wheel_holds_every_module_template_and_static_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = Path(ROOT, "flask_notify_emergency")
    modules = {f"flask_notify_emergency/{p.relative_to(package).as_posix()}"
               for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set(), "modules missing from the wheel (list their package in setup.cfg)"
    shipped = {f"flask_notify_emergency/{kind}/{p.relative_to(Path(ROOT, kind)).as_posix()}"
               for kind in ("templates", "static")
               for p in Path(ROOT, kind).rglob("*") if p.is_file() and p.suffix in (".html", ".js", ".css")}
    assert shipped - names == set(), "templates or static files missing from the wheel"
    recorded = json.loads(surface.RECORD.read_text())  # the public surface, as it was recorded
    wheel_files = {f"flask_notify_emergency/{kind}/{name}" for kind in ("templates", "static")
                   for name in recorded[kind]}
    assert wheel_files - names == set(), "a recorded template or static file is not in the wheel"
    assert "flask_notify_emergency/py.typed" in names
    assert "flask_notify_emergency/cli/rollback_notification_system.sh" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "notify-emergency = flask_notify_emergency.cli.console:main" in \
        zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "flask_notify_emergency/static/vendor/socket.io.min.js" in names
    assert not any(n.startswith(("templates/", "static/", "tests/", "examples/")) for n in names)
    translations = "flask_notify_emergency/translations/"
    assert {translations + "flask_notify_emergency.pot",
            translations + "de/LC_MESSAGES/flask_notify_emergency.po",
            translations + "de/LC_MESSAGES/flask_notify_emergency.mo"} <= names
    assert not any("axe" in n for n in names), "axe-core is for the tests only"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: Any) -> tuple[Path, Path, dict[str, str]]:
    """(venv, a site with the example app, the environment) with the wheel installed."""
    work = tmp_path_factory.mktemp("installed")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=work)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(wheel)], cwd=work, timeout=600)
    app_dir = work / "site"
    shutil.copytree(Path(ROOT, "examples"), app_dir / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "instance", "*.sqlite"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FLASK_APP", "DATABASE_URL", "NOTIFY_EMERGENCY_REDIS_URL")
           and not k.startswith("FLASK_")}
    # the venv's commands first, as after 'source venv/bin/activate'
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, app_dir, env


def test_the_installed_wheel_renders_the_example_page_and_serves_static_files(installed):
    venv, app_dir, env = installed
    (app_dir / "check.py").write_text(PAGE_CHECK)
    out = run([str(venv / "bin" / "python"), "check.py"], cwd=app_dir, env=env)
    assert "WHEEL-PAGE-OK" in out


def test_the_installed_console_command_and_rollback_script_run_the_runbook(installed, tmp_path):
    venv, app_dir, env = installed
    console = str(venv / "bin" / "notify-emergency")
    env = dict(env, FLASK_APP="examples/app.py:flask_app",
               FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'runbook.sqlite'}",
               FLASK_NOTIFY_EMERGENCY_MONITOR_ENABLED="false",
               NOTIFY_EMERGENCY_ROLLBACK_LOG=str(tmp_path / "rollback.log"))

    status = json.loads(run([console, "status", "--json"], cwd=app_dir, env=env))
    assert status["mode"] == "normal"
    assert "activate-emergency" in run([console, "--help"], cwd=app_dir, env=env)

    written = json.loads(run([console, "rollback-script", "--output", str(tmp_path / "rollback.sh"), "--json"],
                             cwd=app_dir, env=env))
    assert written["source"].startswith(str(venv)), written
    script = tmp_path / "rollback.sh"
    assert os.access(script, os.X_OK)
    dry = run([str(script), "--reason", "wheel check", "--dry-run"], cwd=app_dir, env=env)
    assert "Dry run: nothing changed" in dry and "Rollback rehearsal on a copy" in dry
    assert "$ flask emergency rollback --reason wheel check --dry-run" in (tmp_path / "rollback.log").read_text()
    again = json.loads(run([console, "--app", "examples/app.py:flask_app", "status", "--json"], cwd=app_dir, env=env))
    assert again["mode"] == "normal"  # a dry run changes nothing

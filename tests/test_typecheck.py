"""The package stays mypy clean under the settings in setup.cfg (what ``make typecheck`` runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.apps import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of our own: others may run mypy in the same checkout at the same time."""
    return tmp_path_factory.mktemp("mypy-cache")


def run_mypy(cache: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    """``python -m mypy`` from the checkout's root, so it reads setup.cfg's [mypy] section."""
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *targets],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_package_is_mypy_clean(mypy_cache: Path) -> None:
    result = run_mypy(mypy_cache, "flask_notify_emergency")
    assert result.returncode == 0, result.stdout + result.stderr
    checked = re.search(r"no issues found in (\d+) source files", result.stdout)
    assert checked, result.stdout
    modules = sum(1 for _ in Path(ROOT, "flask_notify_emergency").rglob("*.py"))
    assert int(checked.group(1)) == modules  # every module was checked, none skipped


def test_setup_cfg_settings_catch_mistakes(mypy_cache: Path, tmp_path: Path) -> None:
    """The same run fails on a wrong type and on a stale ``type: ignore`` (warn_unused_ignores)."""
    sample = tmp_path / "sample.py"
    sample.write_text('count: int = "three"\nname: str = "ok"  # type: ignore[assignment]\n')
    result = run_mypy(mypy_cache, os.fspath(sample))
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'sample.py:1: error: Incompatible types in assignment' in result.stdout
    assert 'sample.py:2: error: Unused "type: ignore" comment' in result.stdout

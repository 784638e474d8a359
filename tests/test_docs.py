"""The README's configuration table is generated from config.py and must stay current."""

from __future__ import annotations

import os

from flask_notify_emergency import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

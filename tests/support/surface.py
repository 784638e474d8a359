"""The extension's public surface, recorded in ``tests/public_surface.json``.

``python -m tests.support.surface --write`` records it anew (after adding a public name on
purpose); ``tests/test_structure.py`` fails when something recorded disappears or something
new is not recorded.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
RECORD = ROOT / "tests" / "public_surface.json"


def current() -> dict[str, list[str]]:
    """Package names, signals, config keys, CLI commands, blueprint URLs, templates, static files."""
    if str(ROOT / "examples") not in sys.path:
        sys.path.insert(0, str(ROOT / "examples"))
    import flask_notify_emergency as package
    from flask_notify_emergency import signals
    from tests.support.apps import build_example

    app, _ = build_example({"NOTIFY_EMERGENCY_MONITOR_ENABLED": False, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    group: Any = app.cli.commands["emergency"]  # type: ignore[index]
    blueprint = app.extensions["notify_emergency"].blueprint_name

    def files(kind: str) -> list[str]:
        base = ROOT / kind
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)

    return {
        "package": sorted(package.__all__),
        "signals": sorted(n for n in dir(signals) if type(getattr(signals, n)).__name__ == "NamedSignal"),
        "config": sorted(k for k in app.config if k.startswith("NOTIFY_EMERGENCY_")),
        "commands": sorted(group.commands),
        "urls": sorted(f"{r.rule} {','.join(sorted(r.methods - {'HEAD', 'OPTIONS'}))} {r.endpoint}"
                       for r in app.url_map.iter_rules() if r.endpoint.startswith(blueprint + ".")),
        "templates": files("templates"),
        "static": files("static"),
    }


if __name__ == "__main__":
    if "--write" not in sys.argv:
        print(json.dumps(current(), indent=1))
    else:
        RECORD.write_text(json.dumps(current(), indent=1) + "\n")
        print(f"recorded {os.path.relpath(RECORD)}")

"""Where the shipped templates and static files are, installed or in a checkout."""

from __future__ import annotations

import os

_PKG = os.path.dirname(os.path.abspath(__file__))


def _locate(name: str) -> str:
    # an installed wheel maps them into the package (flask_notify_emergency.templates);
    # an editable install or a plain checkout has them at the top level beside the package.
    try:
        import importlib

        mod = importlib.import_module(f"flask_notify_emergency.{name}")
        paths = list(getattr(mod, "__path__", []))
        if paths and os.path.isdir(paths[0]):
            return paths[0]
    except ImportError:
        pass
    return os.path.join(os.path.dirname(_PKG), name)


def templates_dir() -> str:
    return _locate("templates")


def static_dir() -> str:
    return _locate("static")

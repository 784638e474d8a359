"""The example app for the ``flask`` command line in a process of its own: config from
``$SERVE_CONFIG`` (JSON), as ``serve.py`` takes it. ``flask --app tests.support.flask_app:create``."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.support.apps import build_example


def create() -> Any:
    return build_example(json.loads(os.environ.get("SERVE_CONFIG", "{}")))[0]

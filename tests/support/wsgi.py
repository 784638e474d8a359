"""The example app as a WSGI module for gunicorn: ``gunicorn tests.support.wsgi:app``.

Config from ``$SERVE_CONFIG`` (JSON), as :mod:`tests.support.serve` takes it. gunicorn loads
this module in the worker, after a gevent or eventlet worker has monkey-patched the standard
library, so the app is built on the patched modules (as in production without ``--preload``).
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.support.apps import build_example  # noqa: E402

app, socketio = build_example(json.loads(os.environ.get("SERVE_CONFIG", "{}")))

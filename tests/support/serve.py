"""Serve the example app on loopback: config from $SERVE_CONFIG (JSON), port from $SERVE_PORT."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.support.apps import build_example  # noqa: E402


def main() -> None:
    config = json.loads(os.environ.get("SERVE_CONFIG", "{}"))
    app, socketio = build_example(config)
    socketio.run(app, host="127.0.0.1", port=int(os.environ["SERVE_PORT"]), allow_unsafe_werkzeug=True,
                 use_reloader=False, log_output=False)


if __name__ == "__main__":
    main()

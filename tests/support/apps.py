"""Build the example app the way a user would, and serve it on loopback in real processes."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)


def build_example(config: dict[str, Any]) -> tuple[Any, Any]:
    """``examples/app.py``'s ``create_app`` with test config."""
    from app import create_app  # examples/app.py

    # background work starts on the first request unless a test asks for it at boot
    base = {"TESTING": True, "SECRET_KEY": "test-secret", "NOTIFY_EMERGENCY_MONITOR_ENABLED": False,
            "NOTIFY_EMERGENCY_START_ON_BOOT": False}
    base.update(config)
    return create_app(base)


def drop_tables(app: Any) -> None:
    ext = app.extensions.get("notify_emergency")
    db = app.extensions["demo"]["db"]
    if ext is not None:
        ext.close()
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


#: How a served app runs: the development server, or gunicorn (one worker per process, as
#: Flask-SocketIO needs without sticky sessions) with threads or gevent; the Socket.IO async
#: mode each needs. docs/deploy.md gives the same command lines.
SERVERS: dict[str, tuple[list[str], str]] = {
    "werkzeug": ([os.path.join(ROOT, "tests", "support", "serve.py")], "threading"),
    "gunicorn-threads": (["-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "50"],
                         "threading"),
    "gunicorn-gevent": (["-m", "gunicorn", "--worker-class", "gevent", "--workers", "1",
                         "--worker-connections", "1000"], "gevent"),
}


def quick_config(tmp_path: Any, **extra: Any) -> dict[str, Any]:
    """Config for a served example app with short periods, so a test waits seconds, not minutes."""
    config: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'served.sqlite'}",
        "NOTIFY_EMERGENCY_POLL_INTERVAL": 1.0,
        "NOTIFY_EMERGENCY_ACK_TIMEOUT": 1.0,
        "NOTIFY_EMERGENCY_SWEEP_SECONDS": 1.0,
        "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5,
        "NOTIFY_EMERGENCY_DASHBOARD_REFRESH_SECONDS": 1.0,
    }
    config.update(extra)
    return config


class ServedApp:
    """The example app running in its own process, under one of :data:`SERVERS`."""

    def __init__(self, port: int, config: dict[str, Any], env: dict[str, str] | None = None,
                 server: str = "werkzeug", ready: str = "http", collect_output: bool = False) -> None:
        """``ready="tcp"`` waits for the port to accept connections without sending any HTTP
        request (for tests of what a server does with no traffic at all); with
        ``collect_output`` the server's output lines are kept in ``output`` as they come."""
        self.port = port
        self.server = server
        self.ready = ready
        self.output: list[str] = []
        self.url = f"http://127.0.0.1:{port}"
        argv, async_mode = SERVERS[server]
        config = {"SOCKETIO_ASYNC_MODE": async_mode, **config}
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["SERVE_CONFIG"] = json.dumps(config)
        full_env["SERVE_PORT"] = str(port)
        if server.startswith("gunicorn"):
            argv = argv + ["--bind", f"127.0.0.1:{port}", "--graceful-timeout", "3", "--log-level", "warning",
                           "--no-control-socket",  # one path per user by default, shared by every test
                           "tests.support.wsgi:app"]
        self.collect_output = collect_output
        #: the server's last lines, kept whatever ``collect_output`` says (for errors)
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.proc = subprocess.Popen([sys.executable, *argv],
                                     env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        # always read: a server whose pipe nobody empties blocks on its next log line once
        # the pipe's buffer is full, and stops answering in the middle of a test
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        self._wait_ready()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                self.tail.append(line)
                if self.collect_output:
                    self.output.append(line)
        except (OSError, ValueError):  # closed by stop()
            pass

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(5)  # it ends at the pipe's end: every line is in
                out = "\n".join(self.tail)
                raise RuntimeError(f"served app exited with {self.proc.returncode}:\n{out}")
            if self.ready == "tcp":
                from tests.support.services import port_open

                if port_open("127.0.0.1", self.port):
                    return
                time.sleep(0.05)
                continue
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=1) as r:
                    if r.status == 200:
                        served_by = r.headers.get("Server", "")
                        expected = "gunicorn" if self.server.startswith("gunicorn") else "Werkzeug"
                        if not served_by.startswith(expected):
                            self.stop()
                            raise RuntimeError(f"port {self.port} is served by {served_by!r}, not {expected}")
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"served app on port {self.port} did not answer within {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> "ServedApp":
        return self

    def session_as(self, username: str) -> requests.Session:
        """A ``requests`` session signed in as ``username`` through the example app's login form."""
        session = requests.Session()
        response = session.post(self.url + "/login", data={"username": username, "password": username},
                                allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        return session

    def __exit__(self, *exc: object) -> None:
        self.stop()

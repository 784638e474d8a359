"""docs/deploy.md as written: its gunicorn command lines serve the example app (configured from
the environment alone) as two one-worker processes, and its nginx block proxies pages, probes and
the Socket.IO WebSocket to them. A notification goes out through nginx and is acknowledged over
the socket that upgraded through it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.support.apps import EXAMPLES, ROOT, build_example, drop_tables
from tests.support.services import free_port, unavailable, wait_until
from tests.delivery.test_roundtrip import User, rows, user_ids

pytestmark = [pytest.mark.slow, pytest.mark.redis]

DEPLOY = Path(ROOT, "docs", "deploy.md").read_text(encoding="utf-8")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def documented_gunicorn(async_mode: str) -> list[str]:
    """The gunicorn command line docs/deploy.md gives for ``async_mode``."""
    match = re.search(rf"FLASK_SOCKETIO_ASYNC_MODE={async_mode} \\\n(gunicorn [^\n]+)\n", DEPLOY)
    assert match, f"docs/deploy.md has no gunicorn line for {async_mode}"
    argv = shlex.split(match.group(1))
    return [os.path.join(os.path.dirname(sys.executable), "gunicorn"), *argv[1:]]


def documented_nginx(ports: list[int], listen: int) -> str:
    """docs/deploy.md's nginx block, on the test's ports."""
    match = re.search(r"```nginx\n(.*?)```", DEPLOY, re.S)
    assert match, "docs/deploy.md has no nginx block"
    block = match.group(1)
    assert "server 127.0.0.1:8001;" in block and "server 127.0.0.1:8002;" in block and "listen 80;" in block
    return (block.replace("127.0.0.1:8001", f"127.0.0.1:{ports[0]}")
            .replace("127.0.0.1:8002", f"127.0.0.1:{ports[1]}")
            .replace("listen 80;", f"listen 127.0.0.1:{listen};"))


class Process:
    """A server process answering ``probe`` on ``port``; stopped with SIGTERM."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], cwd: str, log: Path,
                 probe: str = "/emergency/livez") -> None:
        self.port = port
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self._answers(probe), timeout=30, interval=0.1,
                       message=f"{argv[0]} on port {port}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"{' '.join(argv)} did not serve:\n{log.read_text(errors='replace')[-3000:]}")

    def _answers(self, probe: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exited with {self.proc.returncode}:\n{self.log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{probe}", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._out.close()


@pytest.fixture
def nginx() -> str:
    if not os.path.exists(NGINX):
        unavailable("nginx (Debian's nginx-light; .ci/run installs it)", "not installed")
    return NGINX


@pytest.mark.parametrize("async_mode", ["gevent", "threading"])
def test_the_documented_layout_serves_pages_probes_and_websockets_through_nginx(
        async_mode, nginx, redis_url, redis_prefix, tmp_path):
    database = f"sqlite:///{tmp_path / 'chat.sqlite'}"
    environment = {"FLASK_SQLALCHEMY_DATABASE_URI": database, "FLASK_SECRET_KEY": "deploy-test",
                   "FLASK_NOTIFY_EMERGENCY_REDIS_URL": redis_url,
                   "FLASK_NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
                   "FLASK_SOCKETIO_MESSAGE_QUEUE": redis_url,
                   "FLASK_NOTIFY_EMERGENCY_MONITOR_ENABLED": "false",
                   "FLASK_NOTIFY_EMERGENCY_READYZ_STRICT": "true",
                   "FLASK_SOCKETIO_ASYNC_MODE": async_mode}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_") and k != "PYTHONPATH"}
    env.update(environment)
    # the tables and demo users once, before the web processes start (as a deploy's migration step)
    setup, _ = build_example({"SQLALCHEMY_DATABASE_URI": database, "TESTING": False})
    engine = sa.create_engine(database)
    started: list[Process] = []
    try:
        ports = [free_port(), free_port()]
        for port in ports:
            argv = [a.replace("127.0.0.1:8001", f"127.0.0.1:{port}") for a in documented_gunicorn(async_mode)]
            started.append(Process(argv, port, env, EXAMPLES, tmp_path / f"web-{port}.log"))
        listen = free_port()
        (tmp_path / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "") +
            f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log warn;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
            f"  proxy_temp_path {tmp_path}/proxy;\n  fastcgi_temp_path {tmp_path}/fastcgi;\n"
            f"  uwsgi_temp_path {tmp_path}/uwsgi;\n  scgi_temp_path {tmp_path}/scgi;\n"
            + documented_nginx(ports, listen) + "}\n")
        started.append(Process([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                                "-e", str(tmp_path / "nginx-error.log")], listen, env, str(tmp_path),
                               tmp_path / "nginx.log"))
        front = f"http://127.0.0.1:{listen}"

        assert requests.get(f"{front}/emergency/livez", timeout=5).json() == {"status": "alive"}
        assert requests.get(f"{front}/emergency/readyz", timeout=5).json()["status"] == "ready"

        class Front:
            url = front

        alice, admin = User(Front, "alice"), User(Front, "admin")  # type: ignore[arg-type]
        try:
            sio = alice.connect()  # polling through nginx, then the WebSocket upgrade through it
            assert sio.transport() == "websocket"
            admin.send_form(user_ids(engine)["alice"], "Through nginx", "Over the proxied WebSocket.")
            wait_until(lambda: alice.received, timeout=15, message="the notification through nginx")
            (note,) = alice.received
            assert note["title"] == "Through nginx"
            assert sio.call("notify_emergency:ack", {"id": note["id"]}, namespace="/notify-emergency",
                            timeout=10) == {"ok": True, "acknowledged": [note["id"]]}
            (row,) = rows(engine)
            assert (bool(row["delivered"]), row["channel"]) == (True, "realtime")
        finally:
            alice.close()
            admin.close()
    finally:
        for process in reversed(started):
            process.stop()
        engine.dispose()
        drop_tables(setup)


def test_the_documented_systemd_units_parse(tmp_path):
    """The unit files' syntax, as systemd reads it (paths made to exist in a scratch root)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    units = re.findall(r"```ini\n# /etc/systemd/system/(\S+)\n(.*?)```", DEPLOY, re.S)
    assert [name for name, _ in units] == ["chat-web@.service", "chat-monitor.service"]
    for name, text in units:
        path = tmp_path / (name.replace("@.", "@8001.") if "@." in name else name)
        text = (text.replace("/srv/chat/venv/bin/", os.path.dirname(sys.executable) + "/")
                .replace("/srv/chat", str(tmp_path)).replace("/etc/chat/chat.env", str(tmp_path / "chat.env"))
                .replace("User=chat\n", "").replace("Group=chat\n", ""))
        path.write_text(text)
    (tmp_path / "chat.env").write_text("FLASK_SECRET_KEY=x\n")
    result = subprocess.run([analyze, "verify", "--man=no", *(str(p) for p in sorted(tmp_path.glob("*.service")))],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "chat-" in line and "Unit" not in line.split(":")[0]]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr

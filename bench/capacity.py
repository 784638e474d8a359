"""Per-unit costs for the capacity model (docs/capacity.md): what one worker, one Redis and
one database spend per connected user, per send and per poll. The socket and Redis numbers
are measured by the full run only (``make bench``); ``--quick`` measures the rates.

* ``socket_memory_kb``: resident memory a serving worker adds per connected Socket.IO
  client. The example app (Flask-SocketIO, ``async_mode="threading"``, the extension on
  SQLite, memory state backend) is served in a process of its own; python-socketio clients
  in this process log in and connect over WebSocket; the worker's ``VmRSS`` and thread count
  (``/proc/<pid>/status``) are read after one client and after all of them, the difference
  divided by the number added (``socket_threads`` likewise).
* ``redis_bytes_per_connected_user`` / ``redis_bytes_per_pending_user``: Redis's own
  ``MEMORY USAGE`` of the connection registry hash and of the pending-marker set, filled
  through the extension's Redis state backend for 10,000 users, divided by 10,000.
* ``redis_commands_per_send_offline`` / ``_connected``: Redis commands one ``send()``
  costs (``INFO commandstats`` of a private ``redis-server`` around 200 sends), for a user
  without a socket (pending marker) and a user the registry holds as connected.
* ``poll_ms`` / ``polls_per_second``: the polling endpoint with nothing pending, through the
  Flask test client (median of many; per second = 1000 / median, one thread of one worker).
* ``send_ms`` / ``sends_per_second``: ``notify.send()`` to an offline user on SQLite (one
  commit each), and ``send_many_rows_per_second`` at 10,000 users in one call.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import redis
import socketio

from .host import build_host
from .timing import Options, progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_USERS = 10_000
SERVE = """
import sys
sys.path.insert(0, {root!r})
from examples.app import create_app
app, socketio = create_app({config!r})
socketio.run(app, host="127.0.0.1", port={port}, allow_unsafe_werkzeug=True, use_reloader=False, log_output=False)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the served app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/login", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the served app did not answer")


def bench_socket_memory(options: Options) -> dict[str, Any]:
    """Resident memory and threads a worker adds per connected socket (full run only)."""
    import requests

    if options.quick:
        return {}
    clients_n = 200
    with tempfile.TemporaryDirectory(prefix="ne-bench-sockets-") as tmp:
        port = _free_port()
        config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/app.sqlite", "NOTIFY_EMERGENCY_MONITOR_ENABLED": False,
                  "SECRET_KEY": "bench"}
        proc = subprocess.Popen([sys.executable, "-c", SERVE.format(root=ROOT, config=config, port=port)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        clients: list[socketio.Client] = []
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_http(url, proc)
            http = requests.Session()
            response = http.post(f"{url}/login", data={"username": "alice", "password": "alice"},
                                 allow_redirects=False, timeout=10)
            if response.status_code != 302:
                raise RuntimeError(f"login failed: {response.status_code}")
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())

            def connect() -> None:
                client = socketio.Client(reconnection=False)
                client.connect(url, headers={"Cookie": cookie}, namespaces=["/notify-emergency"],
                               transports=["websocket"], wait_timeout=10)
                clients.append(client)

            connect()
            time.sleep(1.0)
            before = _status(proc.pid)
            for _ in range(clients_n):
                connect()
            time.sleep(2.0)  # let every handshake settle before reading the worker's memory
            after = _status(proc.pid)
        finally:
            # the server first: closing 200 sockets one by one against a live server takes minutes
            proc.terminate()
            proc.wait(timeout=10)
            for client in clients:
                try:
                    client.disconnect()
                except Exception:  # already gone with the server
                    pass
    per_socket = (after["VmRSS"] - before["VmRSS"]) / clients_n
    threads = (after["Threads"] - before["Threads"]) / clients_n
    progress(f"  {clients_n} sockets: {per_socket:.1f} kB and {threads:.1f} threads each "
             f"(worker RSS {before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MB)")
    return {"socket_memory_kb": round(per_socket, 1), "socket_threads": round(threads, 2),
            "socket_clients": clients_n, "socket_worker_rss_mb": round(before["VmRSS"] / 1024, 1)}


def _private_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def _commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


def bench_redis_costs(options: Options) -> dict[str, Any]:
    """Redis memory per connected / pending user, and Redis commands per send (full run only)."""
    if options.quick:
        return {}
    if shutil.which("redis-server") is None:
        return {"redis_bytes_per_connected_user_skipped": "no redis-server on this machine"}
    with tempfile.TemporaryDirectory(prefix="ne-bench-redis-") as tmp:
        server, url = _private_redis(tmp)
        prefix = f"ne-bench-{uuid.uuid4().hex[:8]}"
        host = build_host(tmp, config={"NOTIFY_EMERGENCY_STATE_BACKEND": "redis", "NOTIFY_EMERGENCY_REDIS_URL": url,
                                       "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": prefix,
                                       "NOTIFY_EMERGENCY_ACK_TIMEOUT": 3600.0})
        client = redis.Redis.from_url(url)
        try:
            ext = host.app.extensions["notify_emergency"]
            users = [str(100_000 + i) for i in range(REDIS_USERS)]
            for uid in users:
                ext.state.connection_opened(uid)
            ext.state.mark_pending_many(users)
            conn_bytes = int(client.memory_usage(f"{prefix}:connections", samples=0) or 0)
            pending_bytes = int(client.memory_usage(f"{prefix}:pending", samples=0) or 0)
            for uid in users:
                ext.state.connection_closed(uid)
            host.add_users(400, prefix="r")
            with host.app.app_context():
                ids = [str(r[0]) for r in host.db.session.execute(
                    host.User.__table__.select().with_only_columns(host.User.id)
                    .where(host.User.username.like("r%")))]
                offline, online = ids[:200], ids[200:]
                for uid in online:
                    ext.state.connection_opened(uid)
                notify = host.notify
                assert notify is not None
                per_send = {}
                for name, group in (("offline", offline), ("connected", online)):
                    before = _commands(client)
                    for uid in group:
                        notify.send(uid, "Hello", "A message.")
                    per_send[name] = (_commands(client) - before) / len(group)
        finally:
            host.close()
            client.close()
            server.terminate()
            server.wait(timeout=10)
    progress(f"  Redis: {conn_bytes / REDIS_USERS:.1f} B per connected user, {pending_bytes / REDIS_USERS:.1f} B "
             f"per pending user; commands per send {per_send}")
    return {"redis_bytes_per_connected_user": round(conn_bytes / REDIS_USERS, 1),
            "redis_bytes_per_pending_user": round(pending_bytes / REDIS_USERS, 1),
            "redis_commands_per_send_offline": round(per_send["offline"], 2),
            "redis_commands_per_send_connected": round(per_send["connected"], 2)}


def bench_worker_rates(options: Options) -> dict[str, Any]:
    """Polls and sends one worker thread serves per second (SQLite, memory backend)."""
    with tempfile.TemporaryDirectory(prefix="ne-bench-rates-") as tmp:
        host = build_host(tmp)
        try:
            client = host.login("alice")
            page = client.get("/").get_data(as_text=True)
            settings = re.search(r'id="notify-emergency-settings">(.*?)</script>', page, re.S)
            if settings is None:
                raise RuntimeError("the page has no notify-emergency settings")
            token = json.loads(settings.group(1))["csrfToken"]
            polls = []
            for _ in range(options.pick(300, 1000)):
                start = time.perf_counter()
                response = client.post("/emergency/api/notifications/poll", json={},
                                       headers={"X-CSRF-Token": token, "Accept": "application/json"})
                polls.append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"the poll answered {response.status_code}")
            notify = host.notify
            assert notify is not None
            uid = host.user_id("bob")
            sends = []
            with host.app.app_context():
                for _ in range(options.pick(100, 400)):
                    start = time.perf_counter()
                    notify.send(uid, "Hello", "A message.")
                    sends.append((time.perf_counter() - start) * 1000)
        finally:
            host.close()
    poll_ms, send_ms = statistics.median(polls), statistics.median(sends)
    progress(f"  poll {poll_ms:.2f} ms ({1000 / poll_ms:.0f}/s), send {send_ms:.2f} ms ({1000 / send_ms:.0f}/s)")
    return {"poll_ms": round(poll_ms, 2), "polls_per_second": round(1000 / poll_ms),
            "send_ms": round(send_ms, 2), "sends_per_second": round(1000 / send_ms)}


BENCHMARKS = [("socket_memory_kb", bench_socket_memory), ("redis_bytes_per_connected_user", bench_redis_costs),
              ("polls_per_second", bench_worker_rates)]

"""The deployment the suite starts and stops itself.

- a private ``redis-server`` (its own port, nothing on disk): Flask-SocketIO's message queue
  (database 0) and the extension's shared state (database 1);
- a database of the run's own on the machine's MariaDB or PostgreSQL, reached through a TCP
  proxy the suite owns (so it can cut the database off);
- ``workers`` gunicorn processes, each one threaded worker (simple-websocket) or one gevent
  worker, serving the example app on its own loopback port; the monitor runs in them as in
  production (one active per cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any, Iterator

import sqlalchemy as sa

from bench.chaos.network import ROOT_BACK_IP, Network
from tests.support.databases import own_database
from tests.support.outages import PrivateRedis, TcpProxy
from tests.support.services import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = "chaos"
WORKER_CLASSES = {
    # --threads is added by the deployment: an open WebSocket holds a thread (see threads_for)
    "gthread": (["--worker-class", "gthread"], "threading"),
    "gevent": (["--worker-class", "gevent", "--worker-connections", "2000"], "gevent"),
}


def threads_for(users: int, workers: int) -> int:
    """A gthread worker's threads: one per WebSocket it holds (its share of the users, and the
    throughput pass signs in as many again) and 60 for requests; at least 100."""
    return max(100, 2 * -(-users // workers) + 60)


class Worker:
    """One gunicorn master with one worker process on its own port."""

    def __init__(self, port: int, env: dict[str, str], worker_class: str, *, host: str = "127.0.0.1",
                 command_prefix: list[str] | None = None, threads: int = 100) -> None:
        self.port = port
        self.threads = threads
        self.host = host
        #: ``ip netns exec NAME`` for a worker on a host of its own (it execs: the pid is gunicorn's)
        self.command_prefix = command_prefix or []
        self.url = f"http://{host}:{port}"
        self.env = env
        self.worker_class = worker_class
        self.log = open(os.path.join(ROOT, "bench", "results", f"worker-{port}.log"), "ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        argv, _ = WORKER_CLASSES[self.worker_class]
        if self.worker_class == "gthread":
            argv = [*argv, "--threads", str(self.threads)]
        self.proc = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "gunicorn", "--workers", "1", *argv,
             "--bind", f"{self.host}:{self.port}",
             "--graceful-timeout", "3", "--timeout", "120", "--keep-alive", "30", "--log-level", "warning",
             "--no-control-socket",
             "bench.chaos.wsgi:app"], cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn on {self.port} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn on {self.port} did not answer within {timeout}s")

    def child_pids(self) -> list[int]:
        """The worker processes gunicorn runs (the ones that serve)."""
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def pids(self) -> list[int]:
        return ([self.proc.pid] if self.proc else []) + self.child_pids()

    def kill_worker(self) -> int:
        """SIGKILL the serving worker; gunicorn's master starts a new one."""
        (pid,) = self.child_pids()[:1]
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


class Deployment:
    """Redis, the database behind its proxy, and the workers; the users seeded."""

    def __init__(self, database_url: str, *, workers: int, users: int, worker_class: str,
                 config: dict[str, Any], network: Network | None = None) -> None:
        self.users = users
        self.token = secrets.token_hex(8)
        self._cpu_ticks: dict[int, int] = {}
        #: with a network, each worker and Redis is a host of its own (see network.py)
        self.network = network
        if network is not None:
            self.redis = PrivateRedis(host=network.back_ip[network.redis_host],
                                      command_prefix=tuple(network.exec_prefix(network.redis_host)))
        else:
            self.redis = PrivateRedis()
        url = sa.engine.make_url(database_url)
        listen = ROOT_BACK_IP if network is not None else "127.0.0.1"
        self.proxy = TcpProxy(url.host or "127.0.0.1", url.port or (3306 if "mysql" in url.drivername else 5432),
                              listen_host=listen)
        self.database_url = url.set(host=listen, port=self.proxy.port).render_as_string(hide_password=False)
        self.direct_url = database_url
        _, async_mode = WORKER_CLASSES[worker_class]
        self.config = {
            "SECRET_KEY": "chaos-" + self.token, "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 20, "pool_pre_ping": True,
                                          "pool_timeout": 5},
            "SOCKETIO_MESSAGE_QUEUE": f"redis://{self.redis.host}:{self.redis.port}/0",
            "SOCKETIO_ASYNC_MODE": async_mode,
            "NOTIFY_EMERGENCY_REDIS_URL": f"redis://{self.redis.host}:{self.redis.port}/1",
            "NOTIFY_EMERGENCY_MONITOR_ENABLED": True,
            **config,
        }
        try:
            self._seed()
        except BaseException:
            self.stop()
            raise
        env = dict(os.environ, CHAOS_CONFIG=json.dumps(self.config), CHAOS_TOKEN=self.token,
                   PYTHONPATH=ROOT)
        threads = threads_for(users, workers)
        if network is not None:
            self.workers = [Worker(free_port(), env, worker_class, host=network.front_ip[h],
                                   command_prefix=network.exec_prefix(h), threads=threads)
                            for h in network.hosts[:workers]]
        else:
            self.workers = [Worker(free_port(), env, worker_class, threads=threads) for _ in range(workers)]
        try:
            for worker in self.workers:  # they boot side by side
                worker.start(wait=False)
            for worker in self.workers:
                worker.wait_ready()
        except BaseException:
            self.stop()  # nothing of a failed start is left running
            raise

    def _seed(self) -> None:
        """Create the tables (the example app does, with its demo users) and the run's users."""
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        from app import create_app

        app, _ = create_app({**self.config, "NOTIFY_EMERGENCY_MONITOR_ENABLED": False,
                             "NOTIFY_EMERGENCY_REDIS_URL": None, "NOTIFY_EMERGENCY_CLI_GROUP": None})
        ext = app.extensions["notify_emergency"]
        engine = sa.create_engine(self.direct_url)
        with engine.begin() as conn:
            existing = {r[0] for r in conn.execute(sa.text("SELECT username FROM demo_user"))}
            rows = [{"u": f"user{i}", "p": PASSWORD} for i in range(self.users) if f"user{i}" not in existing]
            if rows:
                conn.execute(sa.text("INSERT INTO demo_user (username, password, is_admin) VALUES (:u, :p, false)"),
                             rows)
            self.user_ids = {r[0]: str(r[1]) for r in conn.execute(sa.text("SELECT username, id FROM demo_user"))}
        engine.dispose()
        ext.close()
        with app.app_context():
            app.extensions["demo"]["db"].engine.dispose()

    def cpu_seconds(self) -> float:
        """User + system CPU of every worker process so far (clock ticks to seconds); a process
        that is gone (a killed worker) counts with what it had used when last sampled."""
        for worker in self.workers:
            for pid in worker.pids():
                with contextlib.suppress(OSError):
                    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                    self._cpu_ticks[pid] = int(fields[11]) + int(fields[12])
        return sum(self._cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for worker in getattr(self, "workers", []):
            worker.stop()
        self.proxy.close()
        self.redis.stop()


@contextlib.contextmanager
def deployed(kind: str, *, hosts: bool = False, **kwargs: Any) -> Iterator[Deployment]:
    """A deployment on a database of its own (``mariadb`` or ``postgres``), removed afterwards;
    with ``hosts``, every worker and Redis on a network namespace of its own (removed too)."""
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    network = Network(kwargs["workers"]) if hosts else None
    try:
        with own_database(kind) as url:
            deployment = Deployment(url, network=network, **kwargs)
            try:
                yield deployment
            finally:
                deployment.stop()
    finally:
        if network is not None:
            network.close()

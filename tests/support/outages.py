"""Real dependencies a test can break on purpose: a private Redis server it starts, kills,
freezes and restarts, and a TCP proxy in front of a real database it can cut."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from typing import Any, Iterator

import sqlalchemy as sa

from tests.support.databases import own_database
from tests.support.services import free_port, port_open, wait_until


class PrivateRedis:
    """``redis-server`` on a free loopback port, owned by one test (no persistence)."""

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1",
                 command_prefix: tuple[str, ...] = ()) -> None:
        if shutil.which("redis-server") is None:
            from tests.support.services import unavailable

            unavailable("redis-server (the program)", "not installed")
        self.port = port or free_port()
        self.host = host
        #: run it through this (``ip netns exec NAME``: on a host of its own)
        self.command_prefix = list(command_prefix)
        self.url = f"redis://{host}:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="ne-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers."""
        self.proc = subprocess.Popen(
            [*self.command_prefix, "redis-server", "--port", str(self.port), "--bind", self.host, "--save", "",
             "--appendonly", "no", "--dir", self.dir,
             # on an address of its own (a host of its own) it has no loopback clients
             *(["--protected-mode", "no"] if self.host != "127.0.0.1" else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.host, self.port), timeout=10, message="private redis to listen")

    def kill(self) -> None:
        """Kill it the hard way and wait until the port is closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        wait_until(lambda: not port_open(self.host, self.port), timeout=10, message="private redis to die")

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing ever answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpProxy:
    """Forwards a loopback port to ``target``; ``cut()`` closes it and every connection."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self.open()

    def open(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.listen_host, self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """The database is gone: the port refuses, open connections are reset."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        wait_until(lambda: not port_open("127.0.0.1", self.port), timeout=5, message="proxy port to close")

    def close(self) -> None:
        self.cut()


def event_rows(app: Any) -> list[dict[str, Any]]:
    """Every stored emergency event, oldest first."""
    import sqlalchemy as sa

    ext = app.extensions["notify_emergency"]
    t = ext.models.EmergencyEvent.__table__
    with ext.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


@contextlib.contextmanager
def proxied_database(kind: str = "postgres") -> Iterator[tuple[TcpProxy, str]]:
    """A database of the test's own on the shared server, reached through a proxy it can cut:
    yields the proxy and the URL that goes through it."""
    with own_database(kind) as direct:
        url = sa.engine.make_url(direct)
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        try:
            yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)
        finally:
            proxy.close()

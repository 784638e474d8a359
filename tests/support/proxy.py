"""A reverse proxy on loopback in front of a served app, that can break its Socket.IO path.

Like a load balancer in production, it forwards HTTP and WebSocket traffic; a test then
turns it against Socket.IO, as misconfigured or overloaded proxies do:

* ``silence()``: Socket.IO connections stay open but nothing more reaches the browser
  (the socket looks connected; emits vanish);
* ``refuse()``: every Socket.IO connection is cut and new ones get ``503``.

Pages and the JSON API keep working. Every non-upgrade request is sent upstream with
``Connection: close``, so each request travels on its own connection and is inspected.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.support.services import free_port, port_open, wait_until

SOCKET_PATH = b"/socket.io/"


class SocketBreakingProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_port``; break Socket.IO on demand."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "pass"
        self._socket_writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._thread = threading.Thread(target=self._run, name="socket-breaking-proxy", daemon=True)
        self._thread.start()
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout=10, message="the proxy to listen")

    # -- control -------------------------------------------------------------------------
    def silence(self) -> None:
        """Keep Socket.IO connections open, deliver nothing more on them."""
        self.mode = "silence"

    def refuse(self) -> None:
        """Cut every Socket.IO connection and refuse new ones."""
        self.mode = "refuse"
        asyncio.run_coroutine_threadsafe(self._cut_sockets(), self._loop).result(timeout=10)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            await self._cut_sockets()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> "SocketBreakingProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the proxy -----------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._loop.run_forever()

    async def _cut_sockets(self) -> None:
        for writer in list(self._socket_writers):
            writer.close()
        self._socket_writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0]
        is_socket = SOCKET_PATH in request_line.split(b" ")[1] if b" " in request_line else False
        if is_socket and self.mode == "refuse":
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        upgrade = b"upgrade: websocket" in head.lower()
        if not upgrade:
            head = _with_connection_close(head)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        if is_socket:
            self._socket_writers.add(writer)
        up_writer.write(head)
        await asyncio.gather(self._pipe(reader, up_writer, False),
                             self._pipe(up_reader, writer, is_socket), return_exceptions=True)
        self._socket_writers.discard(writer)
        for w in (writer, up_writer):
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_socket: bool) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if to_socket and self.mode == "silence":
                    continue  # swallowed: the browser's socket stays open and hears nothing
                writer.write(data)
                await writer.drain()
        finally:
            if writer.can_write_eof():
                try:
                    writer.write_eof()
                except OSError:
                    pass


def _with_connection_close(head: bytes) -> bytes:
    lines = [line for line in head[:-4].split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n"

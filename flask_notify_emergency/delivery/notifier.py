"""Primary notifiers: the host's Flask-SocketIO, or any callable the host already has.

A notifier's ``deliver(user_id, payload)`` returns ``True`` when the notification is known
to have reached the user, ``None`` when it was dispatched and an acknowledgement will come
later (through :meth:`NotifyEmergency.acknowledge`), and raises or returns ``False`` when
it failed.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable

EVENT = "notify_emergency:notification"
BANNER_EVENT = "notify_emergency:banner"
ACK_EVENT = "notify_emergency:ack"


class NotifierTimeout(TimeoutError):
    """The primary notifier did not answer within ``NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT``."""


class SocketIONotifier:
    """Emits to the user's room; the browser's ``notify_emergency:ack`` confirms delivery.

    With a message queue (``SocketIO(message_queue=...)``) an emit is a publish to that queue,
    which blocks for as long as a hung queue server holds it; then the emit runs in a small
    pool and ``send()`` waits at most ``timeout`` seconds before the notification falls back.
    Without a queue an emit only hands the packet to local sockets and runs inline.
    """

    needs_connection = True

    def __init__(self, socketio: Any, namespace: str, room_prefix: str, timeout: float) -> None:
        self.socketio = socketio
        self.namespace = namespace
        self.room_prefix = room_prefix
        self.timeout = timeout
        self._queued: bool | None = None  # decided once the Socket.IO server exists
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def room(self, user_id: str) -> str:
        return f"{self.room_prefix}{user_id}"

    def _uses_queue(self) -> bool:
        if self._queued is None:
            server = getattr(self.socketio, "server", None)
            if server is None:
                return False
            import socketio as python_socketio

            self._queued = isinstance(getattr(server, "manager", None), python_socketio.PubSubManager)
            if self._queued:
                # as many emits at once as the worker's busy threads send: a few would queue them
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=16, thread_name_prefix="notify-emergency-emit")
        return self._queued

    def deliver(self, user_id: str, payload: dict[str, Any]) -> bool | None:
        if not self._uses_queue():
            self.socketio.emit(EVENT, payload, to=self.room(user_id), namespace=self.namespace)
            return None
        assert self._pool is not None
        future = self._pool.submit(self.socketio.emit, EVENT, payload, to=self.room(user_id),
                                   namespace=self.namespace)
        try:
            future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            # the notification falls back now: an emit still waiting behind hung ones is
            # cancelled; one already stuck in the queue may arrive late, and the client drops
            # that copy by its id when a flash or a poll showed it first
            future.cancel()
            raise NotifierTimeout(
                f"the Socket.IO message queue did not take the notification within {self.timeout}s") from None
        return None

    def broadcast_banner(self, banner: dict[str, Any]) -> None:
        self.socketio.emit(BANNER_EVENT, banner, namespace=self.namespace)


class CallableNotifier:
    """Wraps a host's ``notifier(user_id, payload) -> bool | None`` with a time limit."""

    needs_connection = False

    def __init__(self, func: Callable[[str, dict[str, Any]], Any], timeout: float) -> None:
        self.func = func
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="notify-primary")

    def deliver(self, user_id: str, payload: dict[str, Any]) -> bool | None:
        future = self._pool.submit(self.func, user_id, payload)
        try:
            result = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise NotifierTimeout(
                f"the notifier {getattr(self.func, '__name__', self.func)!r} did not answer "
                f"within {self.timeout}s") from None
        return None if result is None else bool(result)

    def broadcast_banner(self, banner: dict[str, Any]) -> None:
        pass

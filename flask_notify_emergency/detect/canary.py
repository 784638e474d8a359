"""The end-to-end canary: one message sent the way real notifications go, and seen arriving.

A liveness ping is not health: python-socketio's ``RedisManager`` logs "giving up" and
returns when Redis is down, so ``emit`` "succeeds" while nothing reaches another worker.
The canary therefore does what a notification does, ``socketio.emit(...)`` on the
notification namespace (to a room of its own that no browser joins), and confirms that the
message came out of the message queue:

* **Redis message queue** (``SOCKETIO_MESSAGE_QUEUE`` / ``message_queue=`` with a
  ``redis://`` URL, i.e. the server's client manager is a ``RedisManager``): a listener
  subscribes to the manager's own pub/sub channel on the manager's own Redis *before* the
  emit, and waits up to ``NOTIFY_EMERGENCY_CANARY_TIMEOUT`` for the emit packet carrying
  the canary's random token. That packet is exactly what every other worker's manager
  receives and turns into socket writes; if it does not arrive, no worker delivers anything.
  Then, if this process's manager runs its listener (a serving worker), a second message
  goes the way a reply from another worker comes back: a ``callback`` packet published on
  the channel, which only the manager's own listener thread can hand to the canary's
  callback. It proves this worker hears the queue (the listener can sit in a long
  reconnect backoff after an outage while Redis already answers everyone else).
* **Kombu message queue on RabbitMQ** (an ``amqp://`` URL, i.e. a ``KombuManager``): the
  same two stages. The manager publishes every packet to a fanout exchange named after its
  channel; the canary binds a private, auto-deleted queue of its own to that exchange over
  its own connection (no retries, so a dead broker fails fast), emits, and waits for the
  packet there. The emit itself runs in a helper thread: Kombu's publisher retries a dead
  broker forever, and the canary must answer by its deadline all the same.
* **No message queue** (one process): the server hands the emit to its own sockets in
  process; there is no queue that could drop it, so the canary checks that ``emit`` runs.

Other message queues (Kafka, ZeroMQ, Kombu on another transport) cannot be observed, so
:func:`check_message_queue` refuses them when the extension is set up.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlparse

from ..config import ConfigError
from ..delivery import CANARY_EVENT

#: A room no browser ever joins: the canary reaches no user.
CANARY_ROOM = "notify-emergency:canary"
#: The pseudo client id the listener stage registers its callback under.
CANARY_SID = "notify-emergency-canary"
_REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")
#: Kombu transports the canary can watch: RabbitMQ (AMQP 0-9-1) and its fanout exchanges
_KOMBU_SCHEMES = ("amqp", "amqps", "pyamqp")
SUPPORTED_QUEUES = ("redis://, rediss://, unix:// (Redis) and amqp://, amqps://, pyamqp:// "
                    "(RabbitMQ through Kombu)")


#: The canary's stages, in order, as :func:`send_canary` reports them to ``on_stage``.
STAGE_SUBSCRIBE = "subscribing to the message queue"
STAGE_TRIP = "its trip through the message queue"
STAGE_LISTENER = "this worker's queue listener"
#: The listener loops' own functions (python-socketio's Redis and Kombu managers): a listener
#: thread standing in one of them, and not below it reading the queue, sleeps before retrying.
_LOOP_FRAMES = ("_redis_listen_with_retries", "_listen")
#: Modules whose frames are how a thread sleeps or waits (a green thread's sleep is Python code).
_SLEEP_MODULES = ("eventlet", "gevent", "greenlet", "time", "threading")


class CanaryTimeout(TimeoutError):
    """The canary was sent but did not come out of the message queue in time."""


def queue_manager(socketio: Any) -> Any:
    """The Socket.IO server's client manager if it is a pub/sub (message queue) one, else None."""
    import socketio as python_socketio

    manager = getattr(getattr(socketio, "server", None), "manager", None)
    return manager if isinstance(manager, python_socketio.PubSubManager) else None


def _manager_of(socketio: Any) -> Any:
    """The client manager the Socket.IO server has, or will have once it starts."""
    server = getattr(socketio, "server", None)
    if server is not None:
        return getattr(server, "manager", None)
    return getattr(socketio, "server_options", {}).get("client_manager")


def queue_kind(manager: Any) -> str | None:
    """``"redis"``, ``"kombu"`` or ``None`` (no queue the canary can observe) for a client manager."""
    import socketio as python_socketio

    if not isinstance(manager, python_socketio.PubSubManager):
        return None
    url = getattr(manager, "redis_url", None)
    if isinstance(url, str) and urlparse(url).scheme in _REDIS_SCHEMES:
        return "redis"
    url = getattr(manager, "url", None)
    if (isinstance(manager, python_socketio.KombuManager) and isinstance(url, str)
            and urlparse(url).scheme in _KOMBU_SCHEMES):
        return "kombu"
    return None


def check_message_queue(socketio: Any) -> None:
    """Refuse a Socket.IO message queue whose deliveries the canary cannot observe.

    A queue that drops emits silently (as they all do when their broker is down) must be
    seen failing, or the extension would report health it cannot know. Raises
    :class:`~flask_notify_emergency.config.ConfigError` saying which queues work."""
    import socketio as python_socketio

    manager = _manager_of(socketio)
    if not isinstance(manager, python_socketio.PubSubManager) or queue_kind(manager) is not None:
        return
    url = getattr(manager, "redis_url", None) or getattr(manager, "url", None)
    where = f" at {urlparse(url).scheme}://…" if isinstance(url, str) and "://" in url else ""
    raise ConfigError(
        f"NotifyEmergency cannot check Flask-SocketIO's message queue: its "
        f"{type(manager).__name__}{where} is not supported, because a canary message through it "
        f"cannot be observed and a broken queue would go unnoticed. Use a message_queue URL of "
        f"{SUPPORTED_QUEUES}.")


def send_canary(socketio: Any, namespace: str, timeout: float,
                on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Send one canary; return what was verified. Raises :class:`CanaryTimeout` or the
    message queue's own error (e.g. ``redis.exceptions.ConnectionError``) when it fails.

    ``on_stage`` is told each stage as it begins (``STAGE_*``): what a canary still running
    at a deadline was waiting for."""
    stage = on_stage or (lambda _: None)
    token = uuid.uuid4().hex
    manager = queue_manager(socketio)
    payload: dict[str, Any] = {"token": token, "sent_at": time.time()}
    if manager is None:
        start = time.perf_counter()
        socketio.emit(CANARY_EVENT, payload, namespace=namespace, to=CANARY_ROOM)
        return {"path": "in-process", "verified": True,
                "round_trip_ms": round((time.perf_counter() - start) * 1000, 3)}
    kind = queue_kind(manager)
    if kind == "kombu":
        result = _through_kombu(socketio, manager, namespace, payload, timeout, stage)
    elif kind == "redis":
        result = _through_redis(socketio, manager, namespace, payload, timeout, stage)
    else:
        socketio.emit(CANARY_EVENT, payload, namespace=namespace, to=CANARY_ROOM)
        return {"path": f"{getattr(manager, 'name', type(manager).__name__)} queue", "verified": False,
                "note": "arrival through this kind of message queue cannot be observed"}
    return _with_listener_stage(manager, namespace, token, result, result.pop("deadline"), timeout, stage)


def _through_redis(socketio: Any, manager: Any, namespace: str, payload: dict[str, Any],
                   timeout: float, stage: Callable[[str], None]) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    client = _redis_client(manager, timeout)
    pubsub = client.pubsub()
    try:
        stage(STAGE_SUBSCRIBE)
        pubsub.subscribe(manager.channel)
        while True:  # the subscription must be in place before the emit, or we could miss it
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CanaryTimeout(f"could not subscribe to the Socket.IO channel {manager.channel!r} "
                                    f"within {timeout}s")
            msg = pubsub.get_message(timeout=remaining)
            if msg and msg.get("type") == "subscribe":
                break
        stage(STAGE_TRIP)
        start = time.perf_counter()
        # from a helper thread: after an outage the manager's publish may sleep in redis-py's
        # retry back-off for seconds; the canary fails at its deadline instead of hanging the
        # check (and every next check, which would find it still running)
        failed = _emit_in_background(socketio, namespace, payload)
        while True:
            remaining = deadline - time.monotonic()
            if failed:
                raise failed[0]
            if remaining <= 0:
                raise CanaryTimeout(f"the canary emit did not come through the Redis message queue "
                                    f"(channel {manager.channel!r}) within {timeout}s")
            msg = pubsub.get_message(timeout=min(remaining, 0.2))
            if msg and msg.get("type") == "message" and _is_ours(msg.get("data"), payload["token"]):
                result = {"path": "redis queue", "verified": True, "channel": manager.channel,
                          "round_trip_ms": round((time.perf_counter() - start) * 1000, 3)}
                break
    finally:
        try:
            pubsub.close()
            client.close()
        except Exception:  # closing a dead connection may fail; nothing to do about it
            pass
    result["deadline"] = deadline
    return result


def _through_kombu(socketio: Any, manager: Any, namespace: str, payload: dict[str, Any],
                   timeout: float, stage: Callable[[str], None]) -> dict[str, Any]:
    import kombu

    deadline = time.monotonic() + timeout
    seen = threading.Event()
    token = payload["token"]
    connection = _kombu_connection(manager, timeout)
    try:
        stage(STAGE_SUBSCRIBE)
        connection.connect()
        queue = kombu.Queue(f"notify-emergency-canary.{token}", manager._exchange(), durable=False,
                            exclusive=True, auto_delete=True)

        def on_message(body: Any, message: Any) -> None:
            message.ack()
            if _is_ours(body, token):
                seen.set()

        # the queue is declared and bound when the consumer starts: before the emit
        with connection.Consumer(queue, callbacks=[on_message], accept=["text/plain", "application/json"]):
            stage(STAGE_TRIP)
            start = time.perf_counter()
            failed = _emit_in_background(socketio, namespace, payload)
            while not seen.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CanaryTimeout(f"the canary emit did not come through the Kombu message queue "
                                        f"(exchange {manager.channel!r}) within {timeout}s")
                if failed:
                    raise failed[0]
                try:
                    connection.drain_events(timeout=min(remaining, 0.2))
                except socket.timeout:
                    pass
            return {"path": "kombu queue", "verified": True, "channel": manager.channel,
                    "round_trip_ms": round((time.perf_counter() - start) * 1000, 3), "deadline": deadline}
    finally:
        try:
            connection.release()
        except Exception:  # releasing a dead connection may fail; nothing to do about it
            pass


def _redis_client(manager: Any, timeout: float) -> Any:
    """A Redis client of our own for the manager's queue, without retries: a dead queue must
    fail fast, not after back-offs (redis or valkey, as the manager itself uses)."""
    module = manager._get_redis_module()
    return module.Redis.from_url(manager.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                 retry=module.retry.Retry(module.backoff.NoBackoff(), 0))


def _kombu_connection(manager: Any, timeout: float) -> Any:
    """A Kombu connection of our own to the manager's broker, one attempt: a dead broker must
    fail fast, not after back-offs."""
    import kombu

    options = dict(manager.connection_options)
    options.update(connect_timeout=timeout, transport_options={"max_retries": 0})
    return kombu.Connection(manager.url, **options)


def _emit_in_background(socketio: Any, namespace: str, payload: dict[str, Any]) -> list[BaseException]:
    """Emit from a helper thread; the returned list receives the emit's exception, if any."""
    failed: list[BaseException] = []

    def emit() -> None:
        try:
            socketio.emit(CANARY_EVENT, payload, namespace=namespace, to=CANARY_ROOM)
        except Exception as exc:  # surfaces in the canary's own thread
            failed.append(exc)

    threading.Thread(target=emit, name="notify-emergency-canary-emit", daemon=True).start()
    return failed


def _with_listener_stage(manager: Any, namespace: str, token: str, result: dict[str, Any],
                         deadline: float, timeout: float, stage: Callable[[str], None]) -> dict[str, Any]:
    listener = getattr(manager, "thread", None)
    if listener is None or getattr(manager, "write_only", False):
        result["listener"] = "not running in this process"
        return result
    stage(STAGE_LISTENER)
    result["listener_round_trip_ms"] = _through_listener(manager, namespace, token,
                                                         max(0.05, deadline - time.monotonic()), timeout)
    result["listener"] = "hears the queue"
    return result


def _through_listener(manager: Any, namespace: str, token: str, remaining: float, timeout: float) -> float:
    """Publish a callback packet for this host; its own listener thread must hand it back."""
    arrived = threading.Event()

    def on_callback(*args: Any) -> None:
        if args and args[0] == token:
            arrived.set()

    # the same bookkeeping Socket.IO uses for acknowledgements that come from other hosts
    ack_id = manager._generate_ack_id(CANARY_SID, on_callback)
    start = time.perf_counter()
    packet = {"method": "callback", "host_id": manager.host_id, "sid": CANARY_SID,
              "namespace": namespace, "id": ack_id, "args": [token]}
    # published from a helper thread: a publisher stuck retrying a dead broker must not hold
    # the canary past its deadline
    threading.Thread(target=manager._publish, args=(packet,), name="notify-emergency-canary-callback",
                     daemon=True).start()
    try:
        if not arrived.wait(remaining):
            raise CanaryTimeout(f"this worker's Socket.IO queue listener did not hear the canary within "
                                f"{timeout}s (it may be waiting to reconnect)")
    finally:
        manager.callbacks.get(CANARY_SID, {}).pop(ack_id, None)
    return round((time.perf_counter() - start) * 1000, 3)


def queue_answers(manager: Any, timeout: float = 1.0) -> bool:
    """Does the message queue answer within ``timeout`` seconds? On a connection of its own:
    the manager's client has no timeout, and a frozen server would hang it."""
    try:
        queue_reply(manager, timeout)
        return True
    except Exception:
        return False


def queue_reply(manager: Any, timeout: float) -> str:
    """The message queue's broker replying on a fresh connection of its own, within
    ``timeout`` seconds: Redis to ``PING``, RabbitMQ to an AMQP handshake. Returns what replied;
    raises the client's error (refused, reset, timed out) when nothing did."""
    if queue_kind(manager) == "kombu":
        connection = _kombu_connection(manager, timeout)
        try:
            connection.connect()
        finally:
            try:
                connection.release()
            except Exception:  # releasing a dead connection may fail; it is gone all the same
                pass
        return "the message queue (RabbitMQ) completed a handshake on a fresh connection"
    client = _redis_client(manager, timeout)
    try:
        try:
            client.ping()
        except manager._get_redis_module().exceptions.ResponseError:
            pass  # NOAUTH, LOADING, BUSY: the server answered
    finally:
        client.close()
    return "the message queue (Redis) replied to PING on a fresh connection"


def listener_asleep(manager: Any, seconds: float, every: float = 0.02) -> str | None:
    """Why this process's queue listener cannot be hearing the queue, or None if it may be.

    Its thread's stack is looked at every ``every`` seconds for ``seconds``: a listener that
    stands in its loop's own frame in every look sleeps in python-socketio's reconnect back-off
    (up to 60 s after an outage); one seen anywhere else is reading the queue or handling what
    it read, which a backlog only makes slow. A listener that is not started here, or cannot
    be looked at, gives None too: it is no evidence either way."""
    listener = getattr(manager, "thread", None)
    if listener is None or getattr(manager, "write_only", False):
        return None
    if hasattr(listener, "is_alive") and not listener.is_alive():
        return "this worker's queue listener has died"
    deadline = time.monotonic() + seconds
    while True:
        frame = _top_frame(listener)
        if frame is None:
            return None
        if not _in_loop(frame):
            return None
        if time.monotonic() >= deadline:
            return "this worker's queue listener is asleep in its reconnect back-off"
        time.sleep(every)


def _top_frame(listener: Any) -> Any:
    """The innermost frame of a listener: an OS thread's, or a suspended green thread's."""
    ident = getattr(listener, "ident", None)
    if isinstance(listener, threading.Thread):
        return sys._current_frames().get(ident) if ident is not None else None
    return getattr(listener, "gr_frame", None)


def _in_loop(frame: Any) -> bool:
    """Does this stack stand in a listener loop's own frame, past the frames that sleep?"""
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _SLEEP_MODULES:
        frame = frame.f_back
    return (frame is not None and frame.f_code.co_name in _LOOP_FRAMES
            and frame.f_globals.get("__name__", "").startswith("socketio."))


def listener_hears(manager: Any, namespace: str, timeout: float) -> bool:
    """Does this process's queue listener hand back a packet within ``timeout`` seconds?"""
    try:
        _through_listener(manager, namespace, uuid.uuid4().hex, timeout, timeout)
    except CanaryTimeout:
        return False
    return True


def _is_ours(raw: Any, token: str) -> bool:
    try:
        packet = json.loads(raw)
    except (TypeError, ValueError):
        return False
    if not isinstance(packet, dict) or packet.get("method") != "emit" or packet.get("event") != CANARY_EVENT:
        return False
    data = packet.get("data")
    first = data[0] if isinstance(data, list) and data else data
    return isinstance(first, dict) and first.get("token") == token

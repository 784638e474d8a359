"""Shared state: switches (mode, breaker, paused services), pending markers, connections.

Reads are answered from an in-process cache so the hot path (every send, every request)
never waits on the network. How the cache learns about changes made elsewhere:

* :class:`MemoryState` (one process, the default): re-reads the database, which holds the
  truth, at most every ``STATE_REFRESH_SECONDS``, so the CLI can still steer a running app.
* :class:`RedisState` (many workers or hosts): every change is published on one Redis
  channel and applied by a listener thread in every worker within milliseconds. If Redis
  goes away it logs a warning, falls back to the memory behaviour (database refresh) and
  reconnects in the background; nothing is lost because the database is the truth.
  A call that failed while the listener's subscription lived on (a server frozen for a
  while, then answering again) is healed the same way: the listener tries again every
  ``LISTENER_RETRY_SECONDS`` until Redis answers.

Self-healing: what only a worker knows, its live sockets, is kept by that worker
(``_own``) next to what it has added to Redis's connection counts (``_published``). When
Redis comes back, empty or not, the worker adds the difference (everything, when its marker
key ``conn-published:<process>`` is gone, i.e. Redis lost its data), announces the new
totals, and re-seeds the pending markers from the database. Sockets that connected or left
while Redis was down are counted locally and published then.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Iterable

import click

from .config import redact_url

log = logging.getLogger("flask_notify_emergency")

#: While Redis is marked unreachable but the listener's subscription still reads, the
#: listener tries to reconnect this often.
LISTENER_RETRY_SECONDS = 1.0
#: A worker writes the breaker's successes to Redis at most this often (see
#: :meth:`RedisState.record_successes`).
SUCCESS_WRITE_SECONDS = 0.5

#: ``() -> (switches: dict, pending_user_ids: set[str])`` read from the database.
Loader = Callable[[], "tuple[dict[str, Any], set[str]]"]
Listener = Callable[[str, Any], None]


class SharedState:
    """In-process cache of the cluster's state, refreshed from the database."""

    backend = "memory"

    def __init__(self, loader: Loader, refresh_seconds: float = 2.0) -> None:
        self._loader = loader
        self._refresh_seconds = refresh_seconds
        self._lock = threading.RLock()
        self._switches: dict[str, Any] = {}
        self._pending: set[str] = set()
        self._connections: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._locks: dict[str, tuple[str, float]] = {}
        self._listeners: list[Listener] = []
        self._loaded_at = 0.0
        self._refresh_failed = False
        self._refreshing = threading.Lock()
        self._write_seq = 0
        self._written_at: dict[str, int] = {}
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # -- refresh from the database --------------------------------------------------------
    def needs_refresh(self) -> bool:
        return time.monotonic() - self._loaded_at >= self._refresh_seconds

    def refresh(self) -> None:
        """Reload switches and pending users from the database (the truth).

        A switch set here while the database was being read is newer than what was read,
        so it is kept; and only one thread refreshes at a time (the others keep serving
        from the cache).
        """
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            started_at_write = self._write_seq
            try:
                switches, pending = self._loader()
            except Exception as exc:  # database down (or tables not created yet): keep what we know
                if not self._refresh_failed:
                    # a command checks the database itself and says so in one line
                    log.log(logging.INFO if click.get_current_context(silent=True) else logging.WARNING,
                            "flask-notify-emergency: could not read state from the database (%s: %s)",
                            type(exc).__name__, (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0])
                self._refresh_failed = True
                self._loaded_at = time.monotonic()
                return
            self._refresh_failed = False
            with self._lock:
                changed = {k: v for k, v in switches.items()
                           if self._switches.get(k) != v and self._written_at.get(k, 0) <= started_at_write}
                self._switches.update(changed)
                self._pending |= pending
                self._loaded_at = time.monotonic()
        finally:
            self._refreshing.release()
        for key, value in changed.items():
            self._notify(key, value)

    def _maybe_refresh(self) -> None:
        if self.needs_refresh():
            self.refresh()

    # -- switches ------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        self._maybe_refresh()
        return self._switches.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set a switch here and tell every other worker (the caller has written the DB)."""
        self._apply_switch(key, value)

    def _apply_switch(self, key: str, value: Any) -> None:
        with self._lock:
            old = self._switches.get(key)
            self._switches[key] = value
            self._write_seq += 1
            self._written_at[key] = self._write_seq
        if old != value:
            self._notify(key, value)

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(key, value)`` whenever a switch changes (from any worker)."""
        self._listeners.append(listener)

    def _notify(self, key: str, value: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(key, value)
            except Exception:  # a listener must not break state propagation
                log.exception("flask-notify-emergency: state listener failed for %r", key)

    # -- pending markers -----------------------------------------------------------------
    def mark_pending(self, user_id: str) -> None:
        with self._lock:
            self._pending.add(user_id)

    def mark_pending_many(self, user_ids: Iterable[str]) -> None:
        """:meth:`mark_pending` for many users at once (a bulk send)."""
        with self._lock:
            self._pending.update(user_ids)

    def clear_pending(self, user_id: str) -> None:
        with self._lock:
            self._pending.discard(user_id)

    def may_have_pending(self, user_id: str) -> bool:
        self._maybe_refresh()
        return user_id in self._pending

    def anyone_pending(self) -> bool:
        """May any user have pending notifications? (Lets a page skip the user lookup.)"""
        self._maybe_refresh()
        return bool(self._pending)

    # -- connections ---------------------------------------------------------------------
    def connection_opened(self, user_id: str) -> None:
        with self._lock:
            self._connections[user_id] = self._connections.get(user_id, 0) + 1

    def connection_closed(self, user_id: str) -> None:
        with self._lock:
            n = self._connections.get(user_id, 0) - 1
            if n > 0:
                self._connections[user_id] = n
            else:
                self._connections.pop(user_id, None)

    def is_connected(self, user_id: str) -> bool:
        return user_id in self._connections

    def connected_users(self) -> int:
        return len(self._connections)

    def connected_user_ids(self) -> list[str]:
        """The users :meth:`is_connected` says are connected, from this worker's cache (no
        round trip: a health check must not wait on Redis to read the database)."""
        with self._lock:
            return list(self._connections)

    def connection_registry(self) -> dict[str, int]:
        """Every user the registry holds as connected, with their socket count."""
        with self._lock:
            return dict(self._connections)

    def forget_connection(self, user_id: str) -> None:
        """Drop a user's registry entry (``clear-sessions``: no live socket behind it)."""
        with self._lock:
            self._connections.pop(user_id, None)

    # -- counters, outcome window, locks -------------------------------------------------
    def incr(self, name: str, ttl: float) -> int:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + 1
            return self._counters[name]

    def reset_counter(self, name: str) -> None:
        with self._lock:
            self._counters.pop(name, None)

    def record_outcome(self, ok: bool, window: float) -> tuple[int, int]:
        """Record one call of the primary path; return (successes, failures) in the window."""
        now = time.monotonic()
        with self._lock:
            self._outcomes.append((now, ok))
            while self._outcomes and self._outcomes[0][0] < now - window:
                self._outcomes.popleft()
            good = sum(1 for _, o in self._outcomes if o)
            return good, len(self._outcomes) - good

    def record_successes(self, n: int, window: float) -> None:
        """Record ``n`` successful calls of the primary path at once (nothing is read back:
        successes alone never trip the breaker)."""
        now = time.monotonic()
        with self._lock:
            self._outcomes.extend([(now, True)] * n)
            while self._outcomes and self._outcomes[0][0] < now - window:
                self._outcomes.popleft()

    def clear_outcomes(self) -> None:
        with self._lock:
            self._outcomes.clear()

    def acquire_lock(self, name: str, ttl: float) -> bool:
        """Take (or renew) a named lock for this process; False if another holds it."""
        now = time.monotonic()
        with self._lock:
            holder = self._locks.get(name)
            if holder and holder[0] != self.process_id and holder[1] > now:
                return False
            self._locks[name] = (self.process_id, now + ttl)
            return True

    def release_lock(self, name: str) -> None:
        with self._lock:
            holder = self._locks.get(name)
            if holder and holder[0] == self.process_id:
                del self._locks[name]

    # -- health ----------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return True

    def ping(self) -> float:
        """Round trip to the backing store in seconds (0 for memory)."""
        return 0.0

    def reconnect(self) -> bool:
        return True

    def close(self) -> None:
        pass


MemoryState = SharedState


class RedisState(SharedState):
    """Redis-backed state with pub/sub invalidation of every worker's cache."""

    backend = "redis"

    def __init__(self, loader: Loader, url: str, prefix: str, refresh_seconds: float = 2.0) -> None:
        super().__init__(loader, refresh_seconds)
        import redis

        self._redis_mod = redis
        self.url = url
        #: the configured URL (``url`` differs only while a drill points it elsewhere)
        self.configured_url = url
        self.prefix = prefix
        self.channel = f"{prefix}:events"
        self._client = self._new_client(url)
        self._healthy = False
        self._warned = False
        #: this process's live sockets per user, and what of them Redis's counts hold
        self._own: dict[str, int] = {}
        self._published: dict[str, int] = {}
        #: breaker successes counted here and not yet written, and when they last were
        self._unwritten_successes = 0
        self._successes_written_at = 0.0
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="notify-emergency-state", daemon=True)
        self._connect()
        self._thread.start()
        self._subscribed.wait(2.0)

    def _new_client(self, url: str) -> Any:
        return self._redis_mod.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                              health_check_interval=10)

    # -- connection management -----------------------------------------------------------
    def redirect(self, url: str | None) -> None:
        """Point this process's Redis connections at ``url`` (a drill's closed port), or back
        at the configured URL with None. Idle connections are dropped and every next use
        connects to the new place, failing or recovering as it would; the listener subscribes
        anew within a second (it sees the client change between reads)."""
        old = self._client
        self.url = url or self.configured_url
        self._client = self._new_client(self.url)
        try:
            old.connection_pool.disconnect(inuse_connections=False)
        except Exception:  # closing what is already broken may fail; it is gone all the same
            pass

    def _connect(self) -> bool:
        try:
            self._client.ping()
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)
            return False
        self.refresh()  # DB is the truth; reseed Redis from it
        try:
            with self._lock:
                pending = list(self._pending)
            deltas = self._republish_connections()
            pipe = self._client.pipeline()
            if pending:
                pipe.sadd(self._key("pending"), *pending)
            pipe.smembers(self._key("pending"))
            pipe.hgetall(self._key("connections"))
            *_, members, conns = pipe.execute()
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)
            return False
        totals = {k.decode(): int(v) for k, v in conns.items() if int(v) > 0}
        with self._lock:
            self._pending |= {m.decode() for m in members}
            self._connections = totals
        was_down = not self._healthy and self._warned
        self._healthy = True  # so the announcements below go out
        for user_id in deltas:  # tell the other workers, whose caches may have missed it
            self._publish({"t": "conn", "u": user_id, "n": totals.get(user_id, 0)})
        if was_down:
            log.warning("flask-notify-emergency: Redis at %s is back; shared state restored.", self._safe_url)
        self._healthy = True
        self._warned = False
        return True

    def _republish_connections(self) -> dict[str, int]:
        """Bring Redis's connection counts in line with this process's live sockets; return
        the changes made. Redis without this process's marker lost what it had published."""
        marker = self._key(f"conn-published:{self.process_id}")
        with self._lock:
            own = dict(self._own)
        published = dict(self._published) if self._client.exists(marker) else {}
        deltas = {u: own.get(u, 0) - published.get(u, 0) for u in set(own) | set(published)}
        deltas = {u: d for u, d in deltas.items() if d}
        pipe = self._client.pipeline()
        for user_id, delta in deltas.items():
            pipe.hincrby(self._key("connections"), user_id, delta)
        pipe.set(marker, "1")
        results = pipe.execute()
        gone = [u for u, n in zip(deltas, results) if int(n) <= 0]
        if gone:
            self._client.hdel(self._key("connections"), *gone)
        with self._lock:
            self._published = own
        if deltas:
            log.info("flask-notify-emergency: re-published %d user(s)' sockets to Redis", len(deltas))
        return deltas

    @property
    def _safe_url(self) -> str:
        return redact_url(self.url)

    def _degrade(self, exc: BaseException) -> None:
        self._healthy = False
        if not self._warned:
            log.warning(
                "flask-notify-emergency: Redis at %s is unreachable (%s); delivery continues from "
                "the database, state is re-read every few seconds until Redis is back.",
                self._safe_url, exc,
            )
            self._warned = True

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def _publish(self, message: dict[str, Any]) -> None:
        if not self._healthy:
            return
        message["from"] = self.process_id
        try:
            self._client.publish(self.channel, json.dumps(message))
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)

    def _publish_many(self, messages: list[dict[str, Any]]) -> None:
        """:meth:`_publish` for many messages, in pipelined round trips."""
        if not self._healthy or not messages:
            return
        try:
            for start in range(0, len(messages), 1000):
                pipe = self._client.pipeline(transaction=False)
                for message in messages[start:start + 1000]:
                    message["from"] = self.process_id
                    pipe.publish(self.channel, json.dumps(message))
                pipe.execute()
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)

    def _listen(self) -> None:
        while not self._stop.is_set():
            client = self._client
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                if not self._healthy:
                    self._connect()
                self._subscribed.set()
                retry_at = 0.0
                while not self._stop.is_set() and client is self._client:  # redirected: subscribe anew
                    msg = pubsub.get_message(timeout=1.0)
                    if msg and msg.get("type") == "message":
                        self._apply(json.loads(msg["data"]))
                    if not self._healthy and time.monotonic() >= retry_at:
                        # another call failed (a timeout while the server was frozen, say) but this
                        # subscription lived through it: once Redis answers, the state is whole again
                        retry_at = time.monotonic() + LISTENER_RETRY_SECONDS
                        self._connect()
            except self._redis_mod.RedisError as exc:
                self._degrade(exc)
                self._subscribed.set()
                self._stop.wait(1.0)
            except Exception:  # never let the listener die
                log.exception("flask-notify-emergency: state listener error")
                self._stop.wait(1.0)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass

    def _apply(self, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "set":
            self._apply_switch(msg["k"], msg["v"])
        elif kind == "pending+":
            super().mark_pending(msg["u"])
        elif kind == "pending-":
            if msg.get("from") != self.process_id:
                super().clear_pending(msg["u"])
        elif kind == "conn":
            with self._lock:
                if msg["n"] > 0:
                    self._connections[msg["u"]] = msg["n"]
                else:
                    self._connections.pop(msg["u"], None)
        elif kind == "outcomes-clear":
            super().clear_outcomes()

    # -- overrides -----------------------------------------------------------------------
    def needs_refresh(self) -> bool:
        # pub/sub keeps the cache current while Redis is healthy
        return not self._healthy and super().needs_refresh()

    def set(self, key: str, value: Any) -> None:
        self._apply_switch(key, value)
        self._publish({"t": "set", "k": key, "v": value})

    def mark_pending(self, user_id: str) -> None:
        super().mark_pending(user_id)
        if self._healthy:
            try:
                self._client.sadd(self._key("pending"), user_id)
            except self._redis_mod.RedisError as exc:
                self._degrade(exc)
        self._publish({"t": "pending+", "u": user_id})

    def mark_pending_many(self, user_ids: Iterable[str]) -> None:
        # one round trip for the set, one for the messages, however many users
        users = sorted(set(user_ids))
        super().mark_pending_many(users)
        if self._healthy and users:
            try:
                for start in range(0, len(users), 10_000):
                    self._client.sadd(self._key("pending"), *users[start:start + 10_000])
            except self._redis_mod.RedisError as exc:
                self._degrade(exc)
        self._publish_many([{"t": "pending+", "u": uid} for uid in users])

    def clear_pending(self, user_id: str) -> None:
        super().clear_pending(user_id)
        if self._healthy:
            try:
                self._client.srem(self._key("pending"), user_id)
            except self._redis_mod.RedisError as exc:
                self._degrade(exc)
        self._publish({"t": "pending-", "u": user_id})

    def _conn_change(self, user_id: str, delta: int) -> None:
        with self._lock:
            own = self._own.get(user_id, 0) + delta
            if own > 0:
                self._own[user_id] = own
            else:
                self._own.pop(user_id, None)
        if delta > 0:
            super().connection_opened(user_id)
        else:
            super().connection_closed(user_id)
        if not self._healthy:
            return  # counted here; published when Redis is back
        try:
            n = int(self._client.hincrby(self._key("connections"), user_id, delta))
            with self._lock:
                self._published[user_id] = self._published.get(user_id, 0) + delta
            if n <= 0:
                self._client.hdel(self._key("connections"), user_id)
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)
            return
        self._publish({"t": "conn", "u": user_id, "n": n})

    def connection_opened(self, user_id: str) -> None:
        self._conn_change(user_id, 1)

    def connection_closed(self, user_id: str) -> None:
        self._conn_change(user_id, -1)

    def connection_registry(self) -> dict[str, int]:
        if self._healthy:
            try:
                stored = self._client.hgetall(self._key("connections"))
                return {k.decode(): int(v) for k, v in stored.items()}
            except self._redis_mod.RedisError as exc:
                self._degrade(exc)
        return super().connection_registry()

    def forget_connection(self, user_id: str) -> None:
        super().forget_connection(user_id)
        with self._lock:
            self._own.pop(user_id, None)
            self._published.pop(user_id, None)
        if self._healthy:
            try:
                self._client.hdel(self._key("connections"), user_id)
            except self._redis_mod.RedisError as exc:
                self._degrade(exc)
        self._publish({"t": "conn", "u": user_id, "n": 0})

    def incr(self, name: str, ttl: float) -> int:
        if not self._healthy:
            return super().incr(name, ttl)
        try:
            pipe = self._client.pipeline()
            pipe.incr(self._key(f"counter:{name}"))
            pipe.expire(self._key(f"counter:{name}"), max(1, int(ttl)))
            return int(pipe.execute()[0])
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)
            return super().incr(name, ttl)

    def reset_counter(self, name: str) -> None:
        super().reset_counter(name)
        if self._healthy:
            try:
                self._client.delete(self._key(f"counter:{name}"))
            except self._redis_mod.RedisError as exc:
                self._degrade(exc)

    def record_outcome(self, ok: bool, window: float) -> tuple[int, int]:
        if not self._healthy:
            return super().record_outcome(ok, window)
        bucket_len = max(1.0, window / 10)
        now = time.time()
        bucket = int(now // bucket_len)
        buckets = [bucket - i for i in range(int(window // bucket_len))]
        unwritten = self._take_unwritten_successes(force=True)
        try:
            pipe = self._client.pipeline()
            key = self._key(f"outcomes:{bucket}")
            pipe.hincrby(key, "ok" if ok else "fail", 1)
            # this worker's successes not written yet count before the window is read
            pipe.hincrby(key, "ok", unwritten)
            pipe.expire(key, int(window + bucket_len) + 1)
            for b in buckets:
                pipe.hmget(self._key(f"outcomes:{b}"), "ok", "fail")
            results = pipe.execute()[3:]
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)
            super().record_successes(unwritten, window)
            return super().record_outcome(ok, window)
        good = sum(int(r[0] or 0) for r in results)
        bad = sum(int(r[1] or 0) for r in results)
        return good, bad

    def record_successes(self, n: int, window: float) -> None:
        """Successes are written at most every :data:`SUCCESS_WRITE_SECONDS` per worker, all
        gathered since in one write (every acknowledgement batch would be a round trip); a
        failure writes what waits before it reads the window, so the worker that judges the
        rate misses none of its own."""
        if not self._healthy:
            super().record_successes(n, window)
            return
        with self._lock:
            self._unwritten_successes += n
        n = self._take_unwritten_successes(force=False)
        if not n:
            return
        bucket_len = max(1.0, window / 10)
        key = self._key(f"outcomes:{int(time.time() // bucket_len)}")
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.hincrby(key, "ok", n)
            pipe.expire(key, int(window + bucket_len) + 1)
            pipe.execute()
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)
            super().record_successes(n, window)

    def _take_unwritten_successes(self, force: bool) -> int:
        """The successes waiting to be written, now taken (0 until they are due, unless ``force``)."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._successes_written_at < SUCCESS_WRITE_SECONDS:
                return 0
            n, self._unwritten_successes = self._unwritten_successes, 0
            self._successes_written_at = now
            return n

    def clear_outcomes(self) -> None:
        super().clear_outcomes()
        with self._lock:
            self._unwritten_successes = 0
        if self._healthy:
            try:
                keys = list(self._client.scan_iter(self._key("outcomes:*")))
                if keys:
                    self._client.delete(*keys)
            except self._redis_mod.RedisError as exc:
                self._degrade(exc)
        self._publish({"t": "outcomes-clear"})

    def acquire_lock(self, name: str, ttl: float) -> bool:
        if not self._healthy:
            return super().acquire_lock(name, ttl)
        key = self._key(f"lock:{name}")
        ms = max(1, int(ttl * 1000))
        try:
            if self._client.set(key, self.process_id, nx=True, px=ms):
                return True
            holder = self._client.get(key)
            if holder is not None and holder.decode() == self.process_id:
                self._client.pexpire(key, ms)
                return True
            return False
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)
            return super().acquire_lock(name, ttl)

    def release_lock(self, name: str) -> None:
        super().release_lock(name)
        if not self._healthy:
            return
        key = self._key(f"lock:{name}")
        try:
            holder = self._client.get(key)
            if holder is not None and holder.decode() == self.process_id:
                self._client.delete(key)
        except self._redis_mod.RedisError as exc:
            self._degrade(exc)

    @property
    def healthy(self) -> bool:
        return self._healthy

    def ping(self) -> float:
        start = time.perf_counter()
        self._client.ping()
        return time.perf_counter() - start

    def reconnect(self) -> bool:
        """Drop pooled connections and reconnect (a recovery action)."""
        try:
            # idle connections only: the listener's pub/sub connection is in use, and closing it
            # under the listener's feet would break its read; a dead one fails there and is redone
            self._client.connection_pool.disconnect(inuse_connections=False)
        except Exception:
            pass
        return self._connect()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        try:
            self._client.close()
        except Exception:
            pass

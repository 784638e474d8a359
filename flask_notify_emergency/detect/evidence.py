"""When did the failure start? The evidence a failure leaves before it is detected.

MTTD is measured from a failure's start to its detection, so the start must be known
without the detection's help. It is the earliest evidence recorded since the last passing
check:

* a failed delivery (the primary notifier raised or reported failure),
* an acknowledgement timeout (a real-time delivery nobody acknowledged: its evidence time is
  the notification's send time, when the message was lost),
* a failed health check of the monitor that did not yet make an emergency;

and with no evidence, the end of the last passing check (the failure began after it).

Both kinds of delivery evidence come through the ``notification_failed`` signal in whichever
worker sends; the monitor records its checks. So that the monitor in one worker sees the
evidence of another, it is kept in Redis (Redis backend): a sorted set
``<prefix>:evidence`` (member ``kind|process``, score the earliest time, ``ZADD LT``) and
``<prefix>:evidence:last-pass``. A passing check removes the evidence older than its own
start. Every process also keeps its own copy, which is what counts when Redis is down.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from .. import signals

log = logging.getLogger("flask_notify_emergency")

#: Evidence kinds.
FAILED_DELIVERY = "failed-delivery"
ACK_TIMEOUT = "ack-timeout"
FAILED_CHECK = "failed-check"
LAST_PASS = "last-passing-check"


def _epoch(value: Any) -> float | None:
    """Seconds since the epoch of a naive-UTC datetime or ISO text (trailing 'Z' allowed)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.rstrip("Z"))
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    return None


def utc_from_epoch(seconds: float) -> dt.datetime:
    """Naive UTC datetime of an epoch time (as every stored time is)."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


class EvidenceLog:
    """The cluster's evidence of a failure since the last passing check."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._local: dict[str, float] = {}
        self._last_pass: float | None = None
        self._client: Any = None

    # -- Redis ---------------------------------------------------------------------------
    def _redis(self) -> Any:
        if getattr(self.state, "backend", "memory") != "redis" or not self.state.healthy:
            return None
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.state.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return self._client

    def _key(self, suffix: str = "") -> str:
        return f"{self.state.prefix}:evidence{suffix}"

    # -- recording -----------------------------------------------------------------------
    def record(self, kind: str, at: float | None = None) -> None:
        """Note evidence of ``kind`` at ``at`` (epoch seconds; default now). Never raises."""
        at = time.time() if at is None else at
        with self._lock:
            if at <= (self._last_pass or 0.0):
                return  # older than a check that passed: not this failure's
            if kind not in self._local or at < self._local[kind]:
                self._local[kind] = at
        try:
            client = self._redis()
            if client is not None:
                client.zadd(self._key(), {f"{kind}|{self.state.process_id}": at}, lt=True)
        except Exception as exc:  # evidence must never break a delivery
            log.debug("flask-notify-emergency: could not record evidence: %s", exc)

    def passed(self, started: float, finished: float) -> None:
        """A check that ran from ``started`` to ``finished`` passed: older evidence is void."""
        with self._lock:
            self._last_pass = max(self._last_pass or 0.0, finished)
            self._local = {k: v for k, v in self._local.items() if v >= started}
        try:
            client = self._redis()
            if client is not None:
                pipe = client.pipeline()
                pipe.zremrangebyscore(self._key(), "-inf", f"({started}")
                pipe.set(self._key(":last-pass"), repr(finished))
                pipe.execute()
        except Exception as exc:
            log.debug("flask-notify-emergency: could not record the passing check: %s", exc)

    # -- reading -------------------------------------------------------------------------
    def failure_start(self, now: float | None = None) -> dict[str, Any] | None:
        """``{"at": epoch, "kind": ...}`` of the earliest evidence since the last passing
        check, else of that check; None when neither is known (nothing ran yet)."""
        now = time.time() if now is None else now
        with self._lock:
            candidates = [(at, kind) for kind, at in self._local.items()]
            last_pass = self._last_pass
        try:
            client = self._redis()
            if client is not None:
                pipe = client.pipeline()
                pipe.zrange(self._key(), 0, -1, withscores=True)
                pipe.get(self._key(":last-pass"))
                members, shared_pass = pipe.execute()
                candidates += [(float(score), member.decode().split("|", 1)[0]) for member, score in members]
                if shared_pass is not None:
                    last_pass = max(last_pass or 0.0, float(shared_pass))
        except Exception as exc:
            log.debug("flask-notify-emergency: could not read the evidence: %s", exc)
        candidates = [(at, kind) for at, kind in candidates if at <= now and at > (last_pass or 0.0)]
        if candidates:
            at, kind = min(candidates)
            return {"at": at, "kind": kind}
        if last_pass is not None and last_pass <= now:
            return {"at": last_pass, "kind": LAST_PASS}
        return None

    def failure_start_time(self, now: dt.datetime) -> tuple[dt.datetime, str | None]:
        """The failure's start as a naive-UTC datetime (``now`` when nothing is known)."""
        start = self.failure_start(_epoch(now))
        if start is None:
            return now, None
        return min(now, utc_from_epoch(start["at"])), start["kind"]

    def reset(self) -> None:
        """Forget the Redis client: the next use makes one from the state's current URL."""
        self.close()
        self._client = None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass


def connect_receivers(app: Any, ext: Any) -> None:
    """Failed deliveries and acknowledgement timeouts become evidence."""

    def on_failed(sender: Any, notification: dict[str, Any], exception: Any = None, **_: Any) -> None:
        if exception is None:  # the acknowledgement never came: lost when it was sent
            ext.evidence.record(ACK_TIMEOUT, _epoch(notification.get("created_at")))
        else:
            ext.evidence.record(FAILED_DELIVERY)

    ext.receivers.append(on_failed)
    signals.notification_failed.connect(on_failed, sender=app, weak=False)

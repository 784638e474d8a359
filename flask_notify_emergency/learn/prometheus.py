"""Prometheus metrics: what happened, counted where it happened; what is, read when scraped.

Needs ``prometheus_client`` (``pip install flask-notify-emergency[prometheus]``); without it
nothing here runs and ``<prefix>/metrics`` answers 501 saying what to install.

Two kinds of numbers, kept apart on purpose:

* **Events** (counters and the acknowledgement histogram) are counted by the process in
  which they happen, from the extension's signals: ``notification_emitted`` and
  ``notification_fallback`` (sent, by channel), ``notification_delivered`` (delivered, by
  channel; the latency of a real-time acknowledgement), ``notification_fallback`` (by reason).
  With several worker processes (gunicorn), set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
  directory shared by the workers before they start: prometheus_client then keeps each
  process's counts in files there, and a scrape of any worker adds up every worker's.
* **Facts about the cluster** (mode, breaker, backlog, connected users, open emergencies,
  the monitor's heartbeat) are not per process: every worker would report the same value
  and summing them would be wrong. They are read at scrape time from the shared state and
  the database, by :class:`ClusterCollector`, so any worker answers the same.

A scrape of ``<prefix>/metrics`` needs an admin's session or ``Authorization: Bearer
<NOTIFY_EMERGENCY_METRICS_TOKEN>``; :func:`make_wsgi_app` gives the same page without any
check, to mount where the host wants (an internal port, its own auth).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from .. import signals
from ..config import MODES
from ..delivery import BREAKER_STATES
from ..detect import LEVELS
from ..models import utcnow
from ..respond import services

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the [prometheus] extra is not installed
    prometheus_client = None  # type: ignore[assignment]

NAMESPACE = "notify_emergency"
MISSING = ("Prometheus metrics need the prometheus_client package: "
           "pip install 'flask-notify-emergency[prometheus]'.")
#: seconds from a notification's creation to its acknowledgement over the socket
ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def available() -> bool:
    return prometheus_client is not None


def multiprocess() -> bool:
    """Whether prometheus_client keeps counts in files shared by the worker processes."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class EventMetrics:
    """This app's counters and histogram, fed by its signals."""

    def __init__(self, app: Any, ext: Any) -> None:
        self.ext = ext
        # a registry per app, so several apps in one process (tests) count apart; in
        # multiprocess mode the counts live in files and the scrape reads those instead
        self.registry = CollectorRegistry(auto_describe=True)
        self.sent = Counter("notifications_sent", "Notifications handed to a channel: 'realtime' "
                            "(emitted to the user's socket) or 'fallback' (flash and polling).",
                            ["channel"], namespace=NAMESPACE, registry=self.registry)
        self.delivered = Counter("notifications_delivered", "Notifications that reached their user, "
                                 "by channel (realtime, flash, poll).", ["channel"], namespace=NAMESPACE,
                                 registry=self.registry)
        self.fallbacks = Counter("fallbacks", "Notifications handed to the fallbacks, by reason "
                                 "(offline, mode-emergency, ack-timeout, ...).", ["reason"],
                                 namespace=NAMESPACE, registry=self.registry)
        self.ack_latency = Histogram("ack_latency_seconds", "Seconds from a notification's creation to "
                                     "its acknowledgement over the socket.", namespace=NAMESPACE,
                                     buckets=ACK_BUCKETS, registry=self.registry)
        for channel in ("realtime", "fallback"):
            self.sent.labels(channel)  # present from the start: a rate over a missing series is nothing
        for channel in ("realtime", "flash", "poll"):
            self.delivered.labels(channel)
        self._connect(app)

    def _connect(self, app: Any) -> None:
        def on_emitted(sender: Any, **_: Any) -> None:
            self.sent.labels("realtime").inc()

        def on_fallback(sender: Any, reason: str = "unknown", **_: Any) -> None:
            self.sent.labels("fallback").inc()
            self.fallbacks.labels(str(reason)).inc()

        def on_delivered(sender: Any, notification_ids: list[int] = (), channel: str = "unknown",  # type: ignore[assignment]
                         seconds: list[float] | None = None, **_: Any) -> None:
            self.delivered.labels(str(channel)).inc(len(notification_ids))
            if channel == "realtime":
                # the acknowledgement read the rows' times already; a sender without them: read them
                for value in seconds if seconds is not None else self._ack_seconds(notification_ids):
                    self.ack_latency.observe(value)

        pairs: list[tuple[Any, Callable[..., None]]] = [
            (signals.notification_emitted, on_emitted), (signals.notification_fallback, on_fallback),
            (signals.notification_delivered, on_delivered)]
        for signal, receiver in pairs:
            self.ext.receivers.append(receiver)
            signal.connect(receiver, sender=app, weak=False)

    def _ack_seconds(self, ids: list[int]) -> list[float]:
        """Creation to acknowledgement, read back from the rows (the emit and the ack may
        happen in different workers: only the row knows both times)."""
        t = self.ext.models.Notification.__table__
        try:
            with self.ext.engine.connect() as conn:
                rows = conn.execute(sa.select(t.c.created_at, t.c.delivered_at).where(t.c.id.in_(ids))).all()
        except Exception:  # a metric must never break an acknowledgement
            return []
        return [max(0.0, (done - made).total_seconds()) for made, done in rows if made and done]


class ClusterCollector:
    """Gauges read at scrape time from the shared state and the database: one truth for
    every worker, never summed across processes."""

    def __init__(self, ext: Any) -> None:
        self.ext = ext

    def describe(self) -> list[Any]:
        return []  # collected on each scrape only

    def collect(self) -> Iterator[Any]:
        ext = self.ext
        mode = GaugeMetricFamily(f"{NAMESPACE}_mode", "The cluster's delivery mode: 1 for the current one.",
                                 labels=["mode"])
        current_mode = ext.control.mode
        for name in MODES:
            mode.add_metric([name], 1.0 if name == current_mode else 0.0)
        yield mode
        breaker = GaugeMetricFamily(f"{NAMESPACE}_breaker_state", "The circuit breaker of the real-time "
                                    "path: 1 for the current state.", labels=["state"])
        current_state = ext.breaker.current
        for state in BREAKER_STATES:
            breaker.add_metric([state], 1.0 if state == current_state else 0.0)
        yield breaker
        yield GaugeMetricFamily(f"{NAMESPACE}_connected_users", "Users with at least one open socket "
                                "(the cluster's connection registry).", value=float(ext.state.connected_users()))
        yield from self._stored()
        heartbeat = ext.control.read(services.MONITOR_HEARTBEAT_KEY) if self._database_up else None
        if isinstance(heartbeat, dict) and heartbeat.get("at"):
            yield GaugeMetricFamily(f"{NAMESPACE}_monitor_heartbeat_age_seconds", "Seconds since the "
                                    "monitor's last tick (any process).",
                                    value=max(0.0, time.time() - float(heartbeat["at"])))
        yield GaugeMetricFamily(f"{NAMESPACE}_database_up", "1 if the database answered this scrape.",
                                value=1.0 if self._database_up else 0.0)

    def _stored(self) -> Iterator[Any]:
        ext = self.ext
        self._database_up = False
        try:
            count, oldest = ext.store.backlog()
            events = ext.models.EmergencyEvent.__table__
            with ext.engine.connect() as conn:
                open_by_level = dict(conn.execute(
                    sa.select(events.c.level, sa.func.count()).where(events.c.status == "open")
                    .group_by(events.c.level)).all())
        except Exception:  # the database may be what failed: say so, keep the rest
            return
        self._database_up = True
        yield GaugeMetricFamily(f"{NAMESPACE}_backlog_size", "Notifications stored and not delivered yet.",
                                value=float(count))
        yield GaugeMetricFamily(f"{NAMESPACE}_backlog_oldest_age_seconds", "Age of the oldest undelivered "
                                "notification (0 when none waits).",
                                value=max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0)
        emergencies = GaugeMetricFamily(f"{NAMESPACE}_open_emergencies", "Open emergency events, by level.",
                                        labels=["level", "level_name"])
        for number, level in LEVELS.items():
            emergencies.add_metric([str(number), level.name], float(open_by_level.get(number, 0)))
        yield emergencies


def scrape_registry(ext: Any) -> Any:
    """The registry one scrape renders: every worker's counts (or this process's) plus the
    cluster's facts."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.MultiProcessCollector(registry)
    else:
        registry.register(_Forward(ext.prometheus.registry))
    registry.register(ClusterCollector(ext))
    return registry


class _Forward:
    """Another registry's metrics, as one collector."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        return iter(self.registry.collect())


def render(ext: Any, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition text for one scrape and its content type (OpenMetrics if asked for)."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(scrape_registry(ext)), content_type


def make_wsgi_app(app: Any) -> Callable[..., Any]:
    """A WSGI app serving the metrics of ``app`` with no access check of its own: mount it
    where only Prometheus reaches it, e.g. ``DispatcherMiddleware(app.wsgi_app,
    {"/internal/metrics": make_wsgi_app(app)})``."""
    if not available():
        raise RuntimeError(MISSING)

    def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        ext = app.extensions["notify_emergency"]
        with app.app_context():
            body, content_type = render(ext, environ.get("HTTP_ACCEPT"))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return metrics_app


def init_app(app: Any, ext: Any) -> None:
    """Count this app's events, if prometheus_client is installed."""
    ext.prometheus = EventMetrics(app, ext) if available() else None

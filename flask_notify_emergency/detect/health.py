"""Health checks: is each part of the notification path working right now?

Five checks, each run in its own worker thread with its own deadline
(``NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT``; the real-time check gets
``CANARY_TIMEOUT`` on top), so a hung dependency fails its check with a timeout instead of
hanging the report. A check whose previous run is still hung is not started again.

=========== ============================================================= =======
check       what it does                                                  weight
=========== ============================================================= =======
realtime    Socket.IO configured; connected users and the disconnect       35
            ratio against the recent peak; delivery failure rate; breaker;
            the end-to-end canary (:mod:`.canary`)
database    ``SELECT 1``; undelivered backlog; rows of connected users      30
            waiting longer than ``BACKLOG_MAX_AGE`` (degraded)
sessions    the session interface opens, saves and reads back a session;    15
            Flask-Login's user loader answers
redis       ping of the shared-state Redis (skipped on the memory backend)  10
resources   process RSS vs ``MEMORY_LIMIT_MB``; free disk of the instance   10
            path vs ``DISK_MIN_FREE_MB`` (degraded at 90% / under 2x)
=========== ============================================================= =======

**Score** = 100 x (sum of weight x credit) / (sum of weights of checks not skipped), with
credit 1 for ok, 0.5 for degraded, 0 for failed. **Status**: ``critical`` if the realtime
or database check failed or the score is under 50, ``degraded`` if any check is degraded
or failed, else ``healthy``. A check's ``ok`` means "did not fail" (degraded is ok).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from ..config import PREFIX, redact_url
from ..delivery import SocketIONotifier, stats
from ..models import utcnow
from .canary import send_canary

CHECK_NAMES = ("realtime", "redis", "database", "sessions", "resources")
WEIGHTS = {"realtime": 35, "database": 30, "sessions": 15, "redis": 10, "resources": 10}
CRITICAL_CHECKS = ("realtime", "database")
CREDIT = {"ok": 1.0, "degraded": 0.5, "failed": 0.0}
#: Thresholds a report carries, so :func:`..classify.classify` judges by the same numbers.
THRESHOLD_KEYS = ("DISCONNECT_RATIO", "DISCONNECT_MIN_USERS", "DELIVERY_FAILURE_RATE",
                  "DELIVERY_MIN_SAMPLE", "BACKLOG_MAX_AGE", "ACTIVITY_WINDOW")
SESSION_PROBE_KEY = "_notify_emergency_probe"
#: Asked of the user loader when no ``TEST_USER_ID`` is set: the answer is ignored, only
#: that the loader runs without raising counts. "0" suits int and string ids alike.
PROBE_USER_ID = "0"


class CheckTimeout(TimeoutError):
    """A check did not finish within its deadline."""


class SessionProbeFailed(RuntimeError):
    """The session interface or the user loader did not behave."""


class ResourceExhausted(RuntimeError):
    """Process memory or free disk is past its configured limit."""


@dataclass
class CheckResult:
    """The outcome of one check."""

    name: str
    status: str  # ok | degraded | failed | skipped
    latency_ms: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    #: qualified names of the exception's classes, most specific first (classification
    #: matches these, never the error text)
    error_types: tuple[str, ...] = ()
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "status": self.status, "latency_ms": self.latency_ms,
                "detail": self.detail, "error": self.error, "error_type": self.error_type,
                "error_types": list(self.error_types)}


@dataclass
class HealthReport:
    """All check results of one run, its score and status."""

    checks: dict[str, CheckResult]
    checked_at: dt.datetime
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> int:
        counted = [c for c in self.checks.values() if c.status in CREDIT]
        total = sum(WEIGHTS[c.name] for c in counted)
        if not total:
            return 100
        return int(round(100 * sum(WEIGHTS[c.name] * CREDIT[c.status] for c in counted) / total))

    @property
    def status(self) -> str:
        if any(self.checks[n].status == "failed" for n in CRITICAL_CHECKS if n in self.checks) or self.score < 50:
            return "critical"
        if any(c.status in ("degraded", "failed") for c in self.checks.values()):
            return "degraded"
        return "healthy"

    @property
    def failing(self) -> list[str]:
        return [n for n, c in self.checks.items() if c.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "score": self.score, "checked_at": self.checked_at.isoformat() + "Z",
                "checks": {n: c.to_dict() for n, c in self.checks.items()}, "thresholds": self.thresholds}


def error_types(exc: BaseException) -> tuple[str, ...]:
    """``module.Class`` of every class in the exception's MRO, most specific first."""
    return tuple(f"{k.__module__}.{k.__qualname__}" for k in type(exc).__mro__ if k not in (object, BaseException))


# -- the runner ------------------------------------------------------------------------------
class _Runtime:
    """Per-app memory of the checks: hung runs, and recent connected-user counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, threading.Thread] = {}
        self.samples: list[tuple[float, int]] = []

    def peak_connected(self, now_count: int, window: float) -> int:
        """Remember ``now_count`` and return the highest count seen within ``window`` seconds."""
        now = time.monotonic()
        with self.lock:
            self.samples.append((now, now_count))
            self.samples = [s for s in self.samples if s[0] >= now - window][-1000:]
            return max(n for _, n in self.samples)


_RUNTIME_LOCK = threading.Lock()


def runtime(ext: Any) -> _Runtime:
    with _RUNTIME_LOCK:
        rt = getattr(ext, "health_runtime", None)
        if rt is None:
            rt = _Runtime()
            ext.health_runtime = rt
        return rt


def run_health_checks(ext: Any, only: Iterable[str] | None = None) -> HealthReport:
    """Run the checks (all, or those named in ``only``) concurrently; never hangs."""
    names = list(CHECK_NAMES) if only is None else list(dict.fromkeys(only))
    unknown = [n for n in names if n not in CHECK_NAMES]
    if unknown:
        raise ValueError(f"unknown health check(s) {', '.join(map(repr, unknown))}: "
                         f"use {', '.join(CHECK_NAMES)}.")
    cfg = ext.app.config
    base_timeout = float(cfg[PREFIX + "HEALTH_CHECK_TIMEOUT"])
    rt = runtime(ext)
    started = time.monotonic()
    jobs: dict[str, tuple[threading.Thread | None, dict[str, Any], list[CheckResult]]] = {}
    for name in names:
        detail: dict[str, Any] = {}
        out: list[CheckResult] = []
        with rt.lock:
            previous = rt.running.get(name)
            if previous is not None and previous.is_alive():
                jobs[name] = (None, detail, out)
                continue
            thread = threading.Thread(target=_run_one, args=(ext, name, detail, out),
                                      name=f"notify-emergency-health-{name}", daemon=True)
            rt.running[name] = thread
        thread.start()
        jobs[name] = (thread, detail, out)
    results: dict[str, CheckResult] = {}
    for name, (job, detail, out) in jobs.items():
        timeout = base_timeout + (float(cfg[PREFIX + "CANARY_TIMEOUT"]) if name == "realtime" else 0.0)
        if job is None:
            results[name] = _timed_out(name, detail, timeout, "its previous run is still hung")
            continue
        job.join(max(0.0, started + timeout - time.monotonic()))
        results[name] = out[0] if out else _timed_out(name, dict(detail), timeout, "still running")
    thresholds = {k: cfg[PREFIX + k] for k in THRESHOLD_KEYS}
    return HealthReport(results, utcnow(), thresholds)


def _timed_out(name: str, detail: dict[str, Any], timeout: float, why: str) -> CheckResult:
    exc = CheckTimeout(f"timeout: no answer within {timeout:g}s ({why})")
    return CheckResult(name, "failed", round(timeout * 1000, 1), detail, str(exc), "CheckTimeout",
                       error_types(exc), exc)


def _run_one(ext: Any, name: str, detail: dict[str, Any], out: list[CheckResult]) -> None:
    start = time.perf_counter()
    try:
        with ext.app.app_context():
            status, latency = CHECKS[name](ext, detail)
    except Exception as exc:  # a failing check is a result, not a crash
        elapsed = round((time.perf_counter() - start) * 1000, 3)
        out.append(CheckResult(name, "failed", elapsed, detail, str(exc) or type(exc).__name__,
                               type(exc).__name__, error_types(exc), exc))
        return
    if latency is None and status != "skipped":
        latency = round((time.perf_counter() - start) * 1000, 3)
    out.append(CheckResult(name, status, latency, detail))


# -- the checks: each fills ``detail``, returns (status, latency_ms) or raises ----------------
def check_realtime(ext: Any, detail: dict[str, Any]) -> tuple[str, float | None]:
    cfg = ext.app.config

    detail["notifier"] = type(ext.notifier).__name__ if ext.notifier is not None else None
    detail["breaker"] = ext.breaker.current
    detail["paused"] = bool(ext.control.paused().get("realtime"))
    connected = ext.state.connected_users()
    peak = runtime(ext).peak_connected(connected, float(cfg[PREFIX + "ACTIVITY_WINDOW"]))
    detail["connected_users"] = connected
    detail["peak_connected_users"] = peak
    judged = peak >= cfg[PREFIX + "DISCONNECT_MIN_USERS"]
    detail["disconnect_ratio"] = round((peak - connected) / peak, 3) if judged and peak else None
    try:
        detail["delivery"] = stats.delivery_stats(ext, float(cfg[PREFIX + "ACTIVITY_WINDOW"]))
    except Exception as exc:  # the database check reports the database; keep judging the socket
        detail["delivery"] = {"error": f"{type(exc).__name__}: {exc}"}
    degraded = (detail["breaker"] == "open"
                or (detail["disconnect_ratio"] or 0) > cfg[PREFIX + "DISCONNECT_RATIO"]
                or stats.rate_exceeded(detail["delivery"], cfg[PREFIX + "DELIVERY_FAILURE_RATE"],
                                       cfg[PREFIX + "DELIVERY_MIN_SAMPLE"]))
    if ext.socketio is None or not isinstance(ext.notifier, SocketIONotifier):
        detail["canary"] = {"path": None, "verified": False, "note": "no Socket.IO server to probe"}
        return ("degraded" if degraded else ("ok" if ext.notifier is not None else "skipped")), None

    detail["canary"] = {"path": "pending"}
    canary = send_canary(ext.socketio, ext.namespace, float(cfg[PREFIX + "CANARY_TIMEOUT"]))
    detail["canary"] = canary
    return ("degraded" if degraded else "ok"), canary.get("round_trip_ms")


def check_redis(ext: Any, detail: dict[str, Any]) -> tuple[str, float | None]:
    state = ext.state
    detail["backend"] = state.backend
    if state.backend != "redis":
        detail["note"] = "memory backend: no Redis to check"
        return "skipped", None

    detail["url"] = redact_url(getattr(state, "url", ""))
    latency = round(state.ping() * 1000, 3)
    detail["subscribed"] = bool(state.healthy)
    # the ping answered but the pub/sub listener has not reconnected yet: workers still
    # re-read the database instead of hearing changes at once
    return ("ok" if state.healthy else "degraded"), latency


def check_database(ext: Any, detail: dict[str, Any]) -> tuple[str, float | None]:
    cfg = ext.app.config
    start = time.perf_counter()
    with ext.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    latency = round((time.perf_counter() - start) * 1000, 3)
    detail["dialect"] = ext.engine.dialect.name
    count, oldest = ext.store.backlog()
    detail["backlog_undelivered"] = count
    detail["backlog_oldest_age_seconds"] = round((utcnow() - oldest).total_seconds(), 1) if oldest else None
    max_age = cfg[PREFIX + "BACKLOG_MAX_AGE"]
    stuck = stats.stuck_backlog(ext, max_age)
    detail["stuck_users"] = len(stuck)
    detail["stuck_oldest_age_seconds"] = max(stuck.values()) if stuck else None
    # only rows of users who have a socket count: an offline user's rows wait by design
    return ("degraded" if stuck else "ok"), latency


def check_sessions(ext: Any, detail: dict[str, Any]) -> tuple[str, float | None]:
    from flask import request

    app = ext.app
    interface = app.session_interface
    detail["interface"] = type(interface).__name__
    token = os.urandom(8).hex()
    with app.test_request_context("/"):
        session = interface.open_session(app, request)
        if session is None or interface.is_null_session(session):
            raise SessionProbeFailed("the session interface opened no session: is SECRET_KEY set?")
        session[SESSION_PROBE_KEY] = token
        response = app.response_class()
        interface.save_session(app, session, response)
    name = interface.get_cookie_name(app)
    cookie = next((h.split(";", 1)[0].split("=", 1)[1] for h in response.headers.getlist("Set-Cookie")
                   if h.startswith(name + "=")), None)
    if not cookie:
        raise SessionProbeFailed(f"saving a session set no {name!r} cookie")
    with app.test_request_context("/", headers={"Cookie": f"{name}={cookie}"}):
        again = interface.open_session(app, request)
        if again is None or again.get(SESSION_PROBE_KEY) != token:
            raise SessionProbeFailed("a saved session did not read back: sessions are being lost")
        again.clear()  # server-side session stores drop the probe's copy
        interface.save_session(app, again, app.response_class())
    detail["round_trip"] = True
    manager = getattr(app, "login_manager", None)
    loader = getattr(manager, "_user_callback", None)
    if loader is None:
        detail["user_loader"] = "absent"
        return "ok", None
    test_id = app.config[PREFIX + "TEST_USER_ID"]
    user = loader(str(test_id) if test_id is not None else PROBE_USER_ID)
    if test_id is not None and user is None:
        raise SessionProbeFailed(f"the user loader returned no user for {PREFIX}TEST_USER_ID={test_id!r}")
    detail["user_loader"] = "loaded test user" if test_id is not None else "answered probe"
    return "ok", None


def check_resources(ext: Any, detail: dict[str, Any]) -> tuple[str, float | None]:
    cfg = ext.app.config
    limit = cfg[PREFIX + "MEMORY_LIMIT_MB"]
    min_free = cfg[PREFIX + "DISK_MIN_FREE_MB"]
    rss = _rss_mb()
    path = ext.app.instance_path
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    free = shutil.disk_usage(path).free / (1024 * 1024)
    detail.update(rss_mb=round(rss, 1), memory_limit_mb=limit, disk_path=path,
                  disk_free_mb=round(free, 1), disk_min_free_mb=min_free)
    problems = []
    if rss > limit:
        problems.append(f"process memory {rss:.0f} MB is over {PREFIX}MEMORY_LIMIT_MB={limit}")
    if free < min_free:
        problems.append(f"free disk at {path} is {free:.0f} MB, under {PREFIX}DISK_MIN_FREE_MB={min_free}")
    detail["memory_exhausted"] = rss > limit
    detail["disk_exhausted"] = free < min_free
    if problems:
        raise ResourceExhausted("; ".join(problems))
    return ("degraded" if rss > 0.9 * limit or free < 2 * min_free else "ok"), None


def _rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # not Linux: the peak is the best there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CHECKS: dict[str, Callable[[Any, dict[str, Any]], tuple[str, float | None]]] = {
    "realtime": check_realtime, "redis": check_redis, "database": check_database,
    "sessions": check_sessions, "resources": check_resources,
}

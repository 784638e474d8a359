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

**Slow is not down.** A database, Redis, real-time or sessions check that runs out of time is given
``HEALTH_ANSWER_TIMEOUT`` more to show that the server answers at all (:func:`second_opinion`):
its own late answer (the check finishing after all), or, for the database and Redis, the
first reply on a fresh connection of its own, outside the pool (MySQL/MariaDB's greeting,
PostgreSQL's answer to an SSL request, Redis's reply to ``PING``); for the real-time check, a
canary that had made its trip, or the message queue replying on a fresh connection while this
worker's queue listener is awake (behind a backlog, not asleep in its reconnect back-off:
:func:`_realtime_answers`). The canary runs before the check's database statistics, so a
check held up by a slow database has shown what real time does. An answer makes the check
``degraded`` with ``detail["overload"]`` (how long it took, what answered, the pool
checkout wait against the query's round trip): overload, classified at level 3, never an
outage. No answer (refused, reset, silence: a frozen server still accepts connections but
says nothing) leaves the check failed, as an unreachable server.

**Score** = 100 x (sum of weight x credit) / (sum of weights of checks not skipped), with
credit 1 for ok, 0.5 for degraded, 0 for failed. **Status**: ``critical`` if the realtime
or database check failed or the score is under 50, ``degraded`` if any check is degraded
or failed, else ``healthy``. A check's ``ok`` means "did not fail" (degraded is ok).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from ..config import PREFIX, redact_url
from ..delivery import SocketIONotifier, stats
from ..models import utcnow
from .canary import listener_asleep, queue_manager, queue_reply, send_canary

CHECK_NAMES = ("realtime", "redis", "database", "sessions", "resources")
WEIGHTS = {"realtime": 35, "database": 30, "sessions": 15, "redis": 10, "resources": 10}
CRITICAL_CHECKS = ("realtime", "database")
CREDIT = {"ok": 1.0, "degraded": 0.5, "failed": 0.0}
#: Thresholds a report carries, so :func:`..classify.classify` judges by the same numbers.
THRESHOLD_KEYS = ("DISCONNECT_RATIO", "DISCONNECT_MIN_USERS", "DELIVERY_FAILURE_RATE",
                  "DELIVERY_MIN_SAMPLE", "BACKLOG_MAX_AGE", "ACTIVITY_WINDOW", "ACK_TIMEOUT")
#: Checks whose timeout gets a second opinion (does the server answer at all?), and those
#: of them with a fresh-connection probe of their own.
ANSWER_CHECKS = ("realtime", "database", "redis", "sessions")
ANSWER_PROBES = ("realtime", "database", "redis")
#: Exception classes (qualified names in a check's MRO) that mean "no answer in time".
TIMEOUT_TYPES = ("builtins.TimeoutError", "sqlalchemy.exc.TimeoutError", "redis.exceptions.TimeoutError",
                 "valkey.exceptions.TimeoutError")
#: PostgreSQL's SSLRequest: any server answers it with one byte before authentication.
_PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
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
    #: wall time of the whole run (``latency_ms`` may be one part of it, e.g. the canary's trip)
    elapsed_ms: float | None = field(default=None, repr=False, compare=False)

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
        #: each check's last run: its thread and the detail it is writing
        self.running: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}
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
            if previous is not None and previous[0].is_alive():
                # what the hung run is waiting for, read as it goes on
                jobs[name] = (None, previous[1], out)
                continue
            thread = threading.Thread(target=_run_one, args=(ext, name, detail, out),
                                      name=f"notify-emergency-health-{name}", daemon=True)
            rt.running[name] = (thread, detail)
        thread.start()
        jobs[name] = (thread, detail, out)
    results: dict[str, CheckResult] = {}
    for name, (job, detail, out) in jobs.items():
        timeout = base_timeout + (float(cfg[PREFIX + "CANARY_TIMEOUT"]) if name == "realtime" else 0.0)
        if job is None:
            results[name] = _timed_out(name, dict(detail), timeout, "its previous run is still hung")
            continue
        job.join(max(0.0, started + timeout - time.monotonic()))
        results[name] = out[0] if out else _timed_out(name, dict(detail), timeout, "still running")
        late = results[name]
        if name in ANSWER_CHECKS and late.status != "failed" and (late.elapsed_ms or 0) > timeout * 1000:
            # it ran past its deadline while another check was awaited: answered, but late
            results[name] = _overloaded(late, _timed_out(name, {}, timeout, "answered late"),
                                        {"by": "the check's own late answer", "answer_ms": late.elapsed_ms}, {})
    slow = [n for n, r in results.items() if n in ANSWER_CHECKS and timed_out(r)]
    if slow:
        results.update(second_opinion(ext, {n: jobs[n] for n in slow}, {n: results[n] for n in slow},
                                      float(cfg[PREFIX + "HEALTH_ANSWER_TIMEOUT"])))
    thresholds = {k: cfg[PREFIX + k] for k in THRESHOLD_KEYS}
    return HealthReport(results, utcnow(), thresholds)


def timed_out(result: CheckResult) -> bool:
    """Did the check fail for want of an answer in time (not a refusal, not a wrong answer)?"""
    return result.status == "failed" and bool(set(result.error_types) & set(TIMEOUT_TYPES))


def second_opinion(ext: Any, jobs: dict[str, tuple[threading.Thread | None, dict[str, Any], list[CheckResult]]],
                   failed: dict[str, CheckResult], wait: float) -> dict[str, CheckResult]:
    """Checks that timed out: does the server answer within ``wait`` more seconds?

    An answer (the check's own late success, or a fresh connection's first reply) makes the
    check ``degraded`` with ``detail["overload"]``; otherwise it stays failed, with
    ``detail["answer_probe"]`` saying what the probe saw."""
    started = time.monotonic()
    deadline = started + wait
    probes: dict[str, dict[str, Any]] = {}
    for name in failed:
        if name in ANSWER_PROBES:
            box: dict[str, Any] = {}
            probes[name] = box
            threading.Thread(target=_answer_probe, args=(ext, name, box, wait, jobs[name][1]),
                             name=f"notify-emergency-answer-{name}", daemon=True).start()
    out: dict[str, CheckResult] = {}
    pending = set(failed)
    while pending:
        for name in sorted(pending):
            job, _, results = jobs[name]
            late = results[0] if job is not None and results else None
            box = probes.get(name, {})
            if late is not None and late.status != "failed":
                out[name] = _overloaded(late, failed[name], {"by": "the check's own late answer",
                                                              "answer_ms": late.elapsed_ms}, box)
            elif box.get("answered") and (name != "realtime" or late is None or timed_out(late)):
                out[name] = _overloaded(late, failed[name], {"by": box.get("by", "a fresh connection's first reply"),
                                                              "answer_ms": box.get("ms")}, box)
            elif (time.monotonic() >= deadline or box.get("refused")
                  or ((name not in ANSWER_PROBES or box.get("done")) and (job is None or late is not None))):
                if name in ANSWER_PROBES and not box.get("done"):
                    box = {"answered": False, "error": f"no answer within {wait:g}s"
                                                         + (" on a fresh connection" if name != "realtime" else "")}
                out[name] = _unanswered(failed[name], box, late)
            else:
                continue
            pending.discard(name)
        if pending:
            time.sleep(0.02)
    return out


def _overloaded(late: CheckResult | None, timed: CheckResult, how: dict[str, Any],
                probe: dict[str, Any]) -> CheckResult:
    base = late if late is not None and late.status != "failed" else None
    detail = dict(base.detail if base is not None else timed.detail)
    # what it was waiting for at its deadline, and the pool checkout against the server's round trip
    parts = {k: v for k, v in dict(detail, **timed.detail).items() if k in ("checkout_ms", "query_ms", "pool")}
    if "phase" in timed.detail:
        parts["waiting_for"] = timed.detail["phase"]
    detail["overload"] = dict(how, answered=True, timeout=timed.error, deadline_ms=timed.latency_ms, **parts)
    if probe:
        detail["answer_probe"] = {k: v for k, v in probe.items() if k != "done"}
    latency = max(base.latency_ms or 0.0, timed.latency_ms or 0.0) if base is not None else timed.latency_ms
    return CheckResult(timed.name, "degraded", latency, detail)


def _unanswered(timed: CheckResult, probe: dict[str, Any], late: CheckResult | None) -> CheckResult:
    detail = dict(timed.detail)
    if probe:
        detail["answer_probe"] = {k: v for k, v in probe.items() if k != "done"}
    if late is not None:
        detail["late_answer"] = {"status": late.status, "error_type": late.error_type, "error": late.error}
    return CheckResult(timed.name, timed.status, timed.latency_ms, detail, timed.error, timed.error_type,
                       timed.error_types, timed.exception)


def _answer_probe(ext: Any, name: str, box: dict[str, Any], wait: float, live: dict[str, Any]) -> None:
    """Fill ``box`` with whether the server answers a fresh connection within ``wait``
    (for the real-time check: :func:`_realtime_answers`, reading the check's ``live`` detail)."""
    start = time.perf_counter()
    try:
        if name == "realtime":
            box["how"] = _realtime_answers(ext, live, wait)
            box["by"] = "the real-time path's own answer"
        else:
            box["how"] = (_database_answers(ext.engine.url, wait) if name == "database"
                          else _redis_answers(ext.state, wait))
        box["answered"] = True
        box["ms"] = round((time.perf_counter() - start) * 1000, 1)
    except Exception as exc:  # no answer: that is the finding
        box["answered"] = False
        box["refused"] = isinstance(exc, (ConnectionRefusedError, ConnectionResetError))
        box["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        box["done"] = True


class NoAnswer(RuntimeError):
    """A second opinion found no sign that the server answers."""


#: How long a second opinion watches this worker's queue listener for a sign of life.
LISTENER_LOOK_SECONDS = 1.0


def _realtime_answers(ext: Any, live: dict[str, Any], wait: float) -> str:
    """Is a real-time check that ran out of time slow, or is real time down?

    A canary that had made the trip (the check then waited on the database, which its own
    check judges) proves the path. Otherwise the message queue must reply on a fresh
    connection, and this worker's queue listener must not be asleep in its reconnect back-off
    (:func:`.canary.listener_asleep`): a listener behind a backlog of other workers' messages,
    or starved of CPU, is late; one that sleeps hears nothing. Raises :class:`NoAnswer` (or the
    queue client's error) when real time may be down."""
    canary = live.get("canary") or {}
    if canary.get("verified"):
        return "the canary had made the trip (the check was then waiting for the database)"
    if canary.get("error") and not canary.get("timed_out"):
        raise NoAnswer(f"the canary failed: {canary['error']}")
    manager = queue_manager(ext.socketio) if ext.socketio is not None else None
    if manager is None:
        if ext.socketio is None:
            raise NoAnswer("no Socket.IO server to answer")
        return "the Socket.IO server emits in this process (no message queue to wait for)"
    deadline = time.monotonic() + wait
    how = queue_reply(manager, wait)
    # looked at for most of what is left of the wait, so the verdict comes within it
    asleep = listener_asleep(manager, max(0.05, min(LISTENER_LOOK_SECONDS, 0.8 * (deadline - time.monotonic()))))
    if asleep:
        raise NoAnswer(f"{how}, but {asleep}")
    return f"{how}, and this worker's queue listener is awake (reading the queue or handling a backlog)"


def _database_answers(url: Any, wait: float) -> str:
    """The database server's first reply on a fresh TCP connection (no login, no pool)."""
    backend = url.get_backend_name()
    if backend in ("mysql", "mariadb"):
        port, hello = 3306, b""  # the server speaks first: its greeting
    elif backend == "postgresql":
        port, hello = 5432, _PG_SSL_REQUEST
    else:
        raise LookupError(f"no answer probe for a {backend} database")
    if not url.host:
        raise LookupError("no answer probe for a database reached through a local socket")
    deadline = time.monotonic() + wait
    with socket.create_connection((url.host, url.port or port), timeout=wait) as conn:
        if hello:
            conn.sendall(hello)
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        if not conn.recv(1):
            raise ConnectionResetError("the server closed the connection without a word")
    return f"{backend} server replied on a fresh connection"


def _redis_answers(state: Any, wait: float) -> str:
    """Redis's reply to PING on a fresh connection; an error reply is an answer too."""
    import redis

    client = redis.Redis.from_url(state.url, socket_timeout=wait, socket_connect_timeout=wait,
                                  retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
    try:
        client.ping()
    except redis.exceptions.ResponseError:
        pass  # NOAUTH, LOADING, BUSY: the server answered
    finally:
        client.close()
    return "redis replied to PING on a fresh connection"


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
    elapsed = round((time.perf_counter() - start) * 1000, 3)
    if latency is None and status != "skipped":
        latency = elapsed
    out.append(CheckResult(name, status, latency, detail, elapsed_ms=elapsed))


#: Control key: when the last emergency ended. Delivery rates are judged from then on only,
#: so the failures that caused it cannot open the next one.
RATES_SINCE_KEY = "rates_since"


def rate_window(ext: Any) -> float:
    """Seconds of deliveries the failure rate is judged over: ``ACTIVITY_WINDOW``, cut at the
    end of the last emergency."""
    window = float(ext.app.config[PREFIX + "ACTIVITY_WINDOW"])
    try:
        since = ext.control.read(RATES_SINCE_KEY)
    except Exception:
        since = None
    if isinstance(since, (int, float)):
        window = max(0.0, min(window, time.time() - since))
    return window


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
    # the canary first: a check that runs out of time waiting on the database afterwards
    # has already shown whether real time works
    canary: dict[str, Any] | None = None
    lost: Exception | None = None
    took = 0.0
    canary_timeout = float(cfg[PREFIX + "CANARY_TIMEOUT"])
    if ext.socketio is not None and isinstance(ext.notifier, SocketIONotifier):
        detail["canary"] = {"path": "pending"}
        detail["phase"] = "canary"
        started = time.perf_counter()
        try:
            # it may arrive late (overload) up to HEALTH_ANSWER_TIMEOUT after its own deadline
            canary = send_canary(ext.socketio, ext.namespace,
                                 canary_timeout + float(cfg[PREFIX + "HEALTH_ANSWER_TIMEOUT"]),
                                 on_stage=lambda stage: detail.__setitem__("phase", f"canary ({stage})"))
            detail["canary"] = canary
        except Exception as exc:  # raised once the statistics are in the detail too
            lost = exc
            detail["canary"] = {"verified": False, "error": f"{type(exc).__name__}: {exc}",
                                "timed_out": bool(set(error_types(exc)) & set(TIMEOUT_TYPES))}
        took = time.perf_counter() - started
    else:
        detail["canary"] = {"path": None, "verified": False, "note": "no Socket.IO server to probe"}
    detail["phase"] = "delivery statistics (database)"
    try:
        window = rate_window(ext)
        detail["delivery"] = stats.delivery_stats(ext, window)
        if stats.rate_exceeded(detail["delivery"], cfg[PREFIX + "DELIVERY_FAILURE_RATE"],
                               cfg[PREFIX + "DELIVERY_MIN_SAMPLE"]):
            # slow or failing? (the classification reads it: overload is not an outage)
            detail["delivery"]["socket_ack_seconds"] = stats.socket_ack_seconds(ext, window)
    except Exception as exc:  # the database check reports the database; keep judging the socket
        detail["delivery"] = {"error": f"{type(exc).__name__}: {exc}"}
    detail.pop("phase", None)
    if lost is not None:
        raise lost
    degraded = (detail["breaker"] == "open"
                or (detail["disconnect_ratio"] or 0) > cfg[PREFIX + "DISCONNECT_RATIO"]
                or stats.rate_exceeded(detail["delivery"], cfg[PREFIX + "DELIVERY_FAILURE_RATE"],
                                       cfg[PREFIX + "DELIVERY_MIN_SAMPLE"]))
    if canary is None:
        return ("degraded" if degraded else ("ok" if ext.notifier is not None else "skipped")), None
    if took > canary_timeout:
        detail["overload"] = {"answered": True, "by": "the canary, arriving late,", "answer_ms": round(took * 1000, 1),
                              "deadline_ms": round(canary_timeout * 1000, 1)}
        return "degraded", canary.get("round_trip_ms")
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
    pool = ext.engine.pool
    if hasattr(pool, "checkedout") and hasattr(pool, "size"):
        detail["pool"] = {"checked_out": pool.checkedout(), "size": pool.size()}
    detail["phase"] = "pool checkout"
    start = time.perf_counter()
    with ext.engine.connect() as conn:
        checked_out = time.perf_counter()
        detail["checkout_ms"] = round((checked_out - start) * 1000, 3)  # a free connection, or a new one
        detail["phase"] = "query"
        conn.execute(sa.text("SELECT 1"))
        detail["query_ms"] = round((time.perf_counter() - checked_out) * 1000, 3)  # the server's round trip
    latency = round((time.perf_counter() - start) * 1000, 3)
    detail["phase"] = "backlog"
    detail["dialect"] = ext.engine.dialect.name
    count, oldest = ext.store.backlog()
    detail["backlog_undelivered"] = count
    detail["backlog_oldest_age_seconds"] = round((utcnow() - oldest).total_seconds(), 1) if oldest else None
    max_age = cfg[PREFIX + "BACKLOG_MAX_AGE"]
    stuck = stats.stuck_backlog(ext, max_age)
    detail["stuck_users"] = len(stuck)
    detail["stuck_oldest_age_seconds"] = max(stuck.values()) if stuck else None
    detail.pop("phase", None)
    # only rows of users who have a socket count: an offline user's rows wait by design
    return ("degraded" if stuck else "ok"), latency


def check_sessions(ext: Any, detail: dict[str, Any]) -> tuple[str, float | None]:
    from flask import request

    app = ext.app
    interface = app.session_interface
    detail["phase"] = "session store"
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
    detail["phase"] = "user loader"
    manager = getattr(app, "login_manager", None)
    loader = getattr(manager, "_user_callback", None)
    if loader is None:
        detail.pop("phase", None)
        detail["user_loader"] = "absent"
        return "ok", None
    test_id = app.config[PREFIX + "TEST_USER_ID"]
    user = loader(str(test_id) if test_id is not None else PROBE_USER_ID)
    if test_id is not None and user is None:
        raise SessionProbeFailed(f"the user loader returned no user for {PREFIX}TEST_USER_ID={test_id!r}")
    detail.pop("phase", None)
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

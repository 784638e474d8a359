"""Classification of a health report by evidence: which check failed, which exception type.

Never by the text of an error: a check's exception is matched by its class (the qualified
names of its MRO, so a ``psycopg2`` or ``pymysql`` error wrapped by SQLAlchemy is a
``DBAPIError`` alike), and numbers are compared with configured thresholds.

=================================================================  ====================  =====
evidence                                                           failure type          level
=================================================================  ====================  =====
database check failed                                              database_persistence  1
realtime check failed (canary lost or timed out, queue down)       realtime_connection   1
more than ``DISCONNECT_RATIO`` of the recent peak of connected      realtime_connection   2
users disconnected (peak >= ``DISCONNECT_MIN_USERS``)
real-time failure rate > ``DELIVERY_FAILURE_RATE`` over >=          message_delivery      2
``DELIVERY_MIN_SAMPLE`` attempts in ``ACTIVITY_WINDOW``
the same failure rate, while acknowledgements still arrive, slowly    overload              3
(the slowest tenth take >= ``SLOW_ACK_SHARE`` of ``ACK_TIMEOUT``), or
while a check below finds a server overloaded: late, not lost
sessions check failed                                              authentication [#]_   2
resources check failed (memory over limit, disk under minimum),    resource_exhaustion   2
or any check raised ``MemoryError`` / ``OSError(ENOSPC)``
a database, Redis, real-time or sessions check ran out of time     overload              3
but the server answered (``detail["overload"]``: its late answer,
or a fresh connection's reply; for real time, the queue replying
and this worker's listener busy with a backlog): slow, not down
breaker open (the real-time path is switched off)                  message_delivery      3
redis check failed (delivery continues from the database)          shared_state          3
resources degraded (memory > 90% of limit, disk < 2x minimum)      resource_exhaustion   3
a connected user's rows waited over ``BACKLOG_MAX_AGE``            message_delivery      4
redis answers but its pub/sub listener is reconnecting             shared_state          4
=================================================================  ====================  =====

.. [#] or the type its exception names: a SQLAlchemy ``DBAPIError`` there means
   database_persistence, a Redis error shared_state (e.g. server-side sessions on Redis).

A saturated ``send()`` makes acknowledgements late, and late ones count as failures; emergency
mode would move every user to polling and add load, so that failure rate is overload, which
never switches emergency mode on (see :mod:`..automation.monitor`).

The most severe finding (lowest level) wins; ties go to the order of the table. The others
are kept in ``evidence["other_findings"]``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from ..config import BY_NAME
from .levels import LEVELS

#: Exception classes (qualified names, matched against a check's MRO) -> failure type.
EXCEPTION_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("database_persistence", ("sqlalchemy.exc.DBAPIError", "sqlalchemy.exc.OperationalError",
                              "sqlalchemy.exc.SQLAlchemyError")),
    ("shared_state", ("redis.exceptions.RedisError", "valkey.exceptions.ValkeyError")),
    ("resource_exhaustion", ("builtins.MemoryError", "flask_notify_emergency.detect.health.ResourceExhausted")),
)
#: Tie-break order between findings of the same level.
PRECEDENCE = ("database_persistence", "realtime_connection", "message_delivery", "authentication",
              "resource_exhaustion", "overload", "shared_state")
#: Acknowledgements this slow (their 90th percentile, as a share of ``ACK_TIMEOUT``) make a
#: failure rate over its threshold overload: the deliveries are late, not failing. Under
#: overload the latencies spread out and the failures are their tail, so the acknowledgements
#: that still come include slow ones; when the path loses them, the ones that come are quick.
#: (Their median is no test: a saturated server answers most acknowledgements quickly enough.)
SLOW_ACK_SHARE = 0.5
#: What each check that can be found overloaded is called in a reason.
OVERLOADED = {"database": "the database", "redis": "Redis", "realtime": "the real-time check",
              "sessions": "the sessions check"}


@dataclass(frozen=True)
class Classification:
    """What failed, how badly, the evidence, and how many users it touches."""

    failure_type: str
    level: int
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    affected_users: int = 0

    @property
    def level_name(self) -> str:
        return LEVELS[self.level].name

    def to_dict(self) -> dict[str, Any]:
        return {"failure_type": self.failure_type, "level": self.level, "level_name": self.level_name,
                "reason": self.reason, "evidence": self.evidence, "affected_users": self.affected_users}


def exception_family(check: dict[str, Any], exc: BaseException | None = None) -> str | None:
    """The failure type a check's exception names by its class, if any."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "resource_exhaustion"
    types = set(check.get("error_types") or ())
    for family, names in EXCEPTION_FAMILIES:
        if types & set(names):
            return family
    return None


def _as_dicts(report: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, BaseException | None], int]:
    """Accept a HealthReport or its ``to_dict()``."""
    if hasattr(report, "to_dict") and hasattr(report, "checks"):
        exceptions = {n: c.exception for n, c in report.checks.items()}
        data = report.to_dict()
    else:
        exceptions, data = {}, report
    thresholds = {k: (data.get("thresholds") or {}).get(k, BY_NAME[k].default)
                  for k in ("DISCONNECT_RATIO", "DELIVERY_FAILURE_RATE", "DELIVERY_MIN_SAMPLE", "BACKLOG_MAX_AGE",
                            "ACK_TIMEOUT")}
    return data["checks"], thresholds, exceptions, int(data.get("score", 0))


def _findings(checks: dict[str, Any], th: dict[str, Any],
              exceptions: dict[str, BaseException | None]) -> list[tuple[str, int, str, str]]:
    """(failure_type, level, check, reason) for every piece of evidence in the report."""
    found: list[tuple[str, int, str, str]] = []

    def failed(name: str) -> dict[str, Any] | None:
        check = checks.get(name)
        return check if check and check.get("status") == "failed" else None

    def because(check: dict[str, Any]) -> str:
        return f"{check.get('error_type') or 'failed'}: {check.get('error') or ''}".strip()

    if (c := failed("database")) is not None:
        found.append(("database_persistence", 1, "database", f"the database is unreachable ({because(c)})"))
    if (c := failed("realtime")) is not None:
        cdetail = c.get("detail") or {}
        waiting = f", waiting for the {cdetail['phase']}" if cdetail.get("phase") else ""
        probe = (cdetail.get("answer_probe") or {}).get("error")
        found.append(("realtime_connection", 1, "realtime",
                      f"real-time delivery is down: the canary did not make the trip ({because(c)}{waiting})"
                      + (f"; no sign it is only slow: {probe}" if probe else "")))
    realtime = checks.get("realtime") or {}
    rdetail = realtime.get("detail") or {}
    ratio = rdetail.get("disconnect_ratio")
    if ratio is not None and ratio > th["DISCONNECT_RATIO"]:
        found.append(("realtime_connection", 2, "realtime",
                      f"{ratio:.0%} of connected users dropped their socket (peak "
                      f"{rdetail.get('peak_connected_users')}, now {rdetail.get('connected_users')})"))
    overloaded: list[str] = []
    for name, what in OVERLOADED.items():
        check = checks.get(name) or {}
        over = (check.get("detail") or {}).get("overload")
        if check.get("status") == "degraded" and isinstance(over, dict) and over.get("answered"):
            overloaded.append(what)
            found.append(("overload", 3, name,
                          f"{what} is overloaded, not unreachable: its check ran past its "
                          f"{(over.get('deadline_ms') or 0) / 1000:g}s deadline, but {over.get('by')} came "
                          f"after {(over.get('answer_ms') or 0) / 1000:.1f}s"
                          + (f" (it was waiting for the {over['waiting_for']})" if over.get("waiting_for") else "")))
    delivery = rdetail.get("delivery") or {}
    rate = delivery.get("failure_rate")
    if rate is not None and delivery.get("attempted", 0) >= th["DELIVERY_MIN_SAMPLE"] and rate > th["DELIVERY_FAILURE_RATE"]:
        failed_share = (f"{rate:.0%} of {delivery['attempted']} real-time deliveries failed "
                        f"(threshold {th['DELIVERY_FAILURE_RATE']:.0%})")
        acks = delivery.get("socket_ack_seconds") or {}
        slow = acks.get("p90") is not None and acks["p90"] >= SLOW_ACK_SHARE * th["ACK_TIMEOUT"]
        if slow or overloaded:
            why = (f"acknowledgements still arrive, slowly (median {acks['median']:g}s, 90th percentile "
                   f"{acks['p90']:g}s, deadline {th['ACK_TIMEOUT']:g}s)" if slow
                   else f"{' and '.join(overloaded)} overloaded")
            found.append(("overload", 3, "realtime",
                          f"{failed_share}, late rather than lost: {why}; the fallbacks deliver them"))
        else:
            found.append(("message_delivery", 2, "realtime", failed_share))
    if rdetail.get("breaker") == "open":
        found.append(("message_delivery", 3, "realtime", "the circuit breaker is open: real-time delivery is off"))
    for name, default, level in (("sessions", "authentication", 2), ("resources", "resource_exhaustion", 2),
                                 ("redis", "shared_state", 3)):
        if (c := failed(name)) is not None:
            family = exception_family(c, exceptions.get(name)) if name != "redis" else None
            found.append((family or default, level, name, f"the {name} check failed ({because(c)})"))
    for name in ("realtime", "database", "sessions"):
        c = failed(name)
        if c is not None and exception_family(c, exceptions.get(name)) == "resource_exhaustion":
            found.append(("resource_exhaustion", 2, name, f"the {name} check ran out of resources ({because(c)})"))
    status = lambda n: (checks.get(n) or {}).get("status")  # noqa: E731
    if status("resources") == "degraded":
        found.append(("resource_exhaustion", 3, "resources", "memory or disk is close to its limit"))
    ddetail = (checks.get("database") or {}).get("detail") or {}
    if status("database") == "degraded" and ddetail.get("stuck_users"):
        found.append(("message_delivery", 4, "database",
                      f"{ddetail['stuck_users']} connected user(s) have notifications waiting over "
                      f"{th['BACKLOG_MAX_AGE']}s (oldest {ddetail.get('stuck_oldest_age_seconds')}s)"))
    if status("redis") == "degraded":
        found.append(("shared_state", 4, "redis", "Redis answers but its pub/sub listener is reconnecting"))
    return found


def classify(report: Any) -> Classification | None:
    """The most severe finding of ``report`` (a HealthReport or its dict), or None if none."""
    checks, th, exceptions, score = _as_dicts(report)
    found = _findings(checks, th, exceptions)
    if not found:
        return None
    found.sort(key=lambda f: (f[1], PRECEDENCE.index(f[0]) if f[0] in PRECEDENCE else len(PRECEDENCE)))
    failure_type, level, check_name, reason = found[0]
    check = checks.get(check_name) or {}
    evidence = {
        "check": check_name, "status": check.get("status"), "error_type": check.get("error_type"),
        "error": check.get("error"), "score": score,
        "failing_checks": sorted(n for n, c in checks.items() if c.get("status") == "failed"),
        "degraded_checks": sorted(n for n, c in checks.items() if c.get("status") == "degraded"),
        "detail": check.get("detail") or {},
        "other_findings": [{"failure_type": f[0], "level": f[1], "check": f[2], "reason": f[3]} for f in found[1:]],
    }
    return Classification(failure_type, level, reason, evidence, _affected(failure_type, level, checks))


def _affected(failure_type: str, level: int, checks: dict[str, Any]) -> int:
    """How many users the finding touches, as far as the report can tell."""
    rdetail = (checks.get("realtime") or {}).get("detail") or {}
    connected = int(rdetail.get("connected_users") or 0)
    peak = int(rdetail.get("peak_connected_users") or connected)
    if failure_type == "realtime_connection":
        return peak if level == 1 else max(0, peak - connected)
    if failure_type == "message_delivery":
        if level == 4:  # rows of connected users waiting too long
            return int(((checks.get("database") or {}).get("detail") or {}).get("stuck_users") or 0)
        if level == 3:  # breaker open: every connected user is served by the fallbacks
            return connected
        return int((rdetail.get("delivery") or {}).get("failed_users") or 0)
    if failure_type in ("database_persistence", "authentication", "resource_exhaustion"):
        return peak
    return 0

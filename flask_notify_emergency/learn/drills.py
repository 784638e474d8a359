"""Emergency drills: a real fault injected into the serving workers, found by the real monitor.

``execute-drill`` records a :class:`Drill` row and injects a fault into the connections every
serving worker really uses (:mod:`..respond.drill_faults`: each worker, and the monitor's
process, points the named connection at a closed port, so real operations fail with the
driver's own errors). It does not declare anything itself: it waits, up to ``--duration``
seconds, for the monitor to open an event of the drill's failure type, then takes the fault
back and waits for the monitor to resolve that event. Detection and recovery are the
monitor's, timed from its event: MTTD from the failure's start (the earliest evidence since
the last passing check, :mod:`..detect.evidence`) to detection, MTTR from detection to
resolution. A drill the monitor did not detect in time is recorded as ``not-detected``, and
the command exits 1.

====================  ==================  ================================================
drill                 monitor must see    fault injected in every serving worker
====================  ==================  ================================================
notification_failure  realtime_connection the Socket.IO message queue hangs (a black hole):
                                          users' sockets stay connected, every emit times
                                          out at the notifier's limit and falls back, the
                                          canary's queue does not answer
websocket_failure     realtime_connection the Socket.IO message queue (Redis) is cut: emits
                                          are lost, the canary does not come through
database_failure      database_persistence the database connections are cut (the event is
                                          written when the database is back, with the
                                          times the monitor saw while it was down; the
                                          monitor says in Redis it has detected it, so
                                          the fault is taken back then)
redis_failure         shared_state        the shared-state Redis is cut
multi_component       realtime_connection the message queue and the shared-state Redis are
                      or shared_state     cut at once (the event's other findings name the
                                          rest)
complete_rollback     (nothing)           no fault: the operator's real rollback to
                                          flash-only delivery (``rollback --confirm``),
                                          a probe notification to the test user (else an
                                          admin) delivered by the fallbacks, then
                                          ``restore --confirm``; both timed, and real
                                          time must be back after it
====================  ==================  ================================================

(``database_connectivity`` is accepted as another name of ``database_failure``.)

A ``complete_rollback`` drill stays rolled back until ``--duration`` has passed since the
rollback (at least for its probe); its lease names the rollback, so if its process dies the
monitor runs ``restore`` (refused, and tried again next tick, while real time's health
checks fail).

The fault is taken back in ``finally``, so Ctrl-C or an error still takes it back; while it
runs the drill holds a lease (:mod:`..respond.drill_lease`) and renews the fault switch's own
expiry with it: if the drill's process is killed, every worker takes the fault back when the
lease runs out, and the monitor's next tick clears the switch and marks the drill abandoned.

``evaluate-drill`` (:mod:`.drill_evaluation`) scores a drill against the runbook's targets.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from ..automation import heartbeat_status, pending_detection
from ..communicate import reference
from ..detect import utc_from_epoch
from ..models import utcnow
from ..respond import drill_faults, drill_lease, emergency, operator_hold
from ..rollback import RollbackError, admin_user_ids, restore, rollback
from .recovery_validation import check_realtime, deliver_test_notification, health_checks, undelivered

MAX_DURATION = 3600.0
MAX_PARTICIPANTS = 20
LOCK = "drill"
POLL_SECONDS = 0.1
MONITOR = "monitor"


class DrillError(Exception):
    """The drill cannot run now; the message says why and what to do."""


@dataclass(frozen=True)
class DrillType:
    """What a drill cuts, and the failure types the monitor may classify it as (any one)."""

    name: str
    expected: tuple[str, ...]
    faults: tuple[str, ...]
    description: str
    rollback: bool = False

    @property
    def failure_type(self) -> str:
        return " or ".join(self.expected)


DRILL_TYPES: dict[str, DrillType] = {d.name: d for d in (
    DrillType("notification_failure", ("realtime_connection",), ("message_queue_hang",),
              "hang the Socket.IO message queue (a black hole) in every serving worker: sockets stay "
              "connected, emits time out and fall back"),
    DrillType("websocket_failure", ("realtime_connection",), ("message_queue",),
              "cut the Socket.IO message queue (Redis) in every serving worker: emits are lost"),
    DrillType("database_failure", ("database_persistence",), ("database",),
              "cut the database connections of every serving worker"),
    DrillType("redis_failure", ("shared_state",), ("shared_state",),
              "cut the shared-state Redis of every serving worker"),
    DrillType("multi_component", ("realtime_connection", "shared_state"), ("message_queue", "shared_state"),
              "cut the Socket.IO message queue and the shared-state Redis of every serving worker at once"),
    DrillType("complete_rollback", (), (),
              "roll the cluster back to flash-only delivery (rollback --confirm)", rollback=True),
)}
#: Other accepted names.
ALIASES = {"database_connectivity": "database_failure"}
CHOICES = tuple(DRILL_TYPES) + tuple(ALIASES)


def parse_participants(text: str | None) -> list[str]:
    """``'a,b'`` -> ``['a', 'b']``; ValueError when empty or unreasonable."""
    names = list(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    if not names:
        raise ValueError("--participants is required: list who takes part, e.g. --participants admin1,admin2.")
    if len(names) > MAX_PARTICIPANTS or any(len(n) > 64 for n in names):
        raise ValueError(f"--participants: at most {MAX_PARTICIPANTS} names of at most 64 characters each.")
    return names


def validate(drill_type: str, duration: float) -> DrillType:
    name = ALIASES.get(drill_type, drill_type)
    if name not in DRILL_TYPES:
        raise ValueError(f"--type must be one of {', '.join(DRILL_TYPES)}; got {drill_type!r}.")
    if not 0 < float(duration) <= MAX_DURATION:
        raise ValueError(f"--duration must be more than 0 and at most {int(MAX_DURATION)} seconds; got {duration}.")
    return DRILL_TYPES[name]


def recovery_wait(ext: Any) -> float:
    """How long the drill waits, after taking its fault back, for the monitor's resolution:
    the healthy checks it needs in a row, with their check time, and room for reconnects."""
    cfg = ext.app.config
    interval = float(cfg["NOTIFY_EMERGENCY_MONITOR_INTERVAL"])
    check = float(cfg["NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT"]) + float(cfg["NOTIFY_EMERGENCY_CANARY_TIMEOUT"])
    return (int(cfg["NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER"]) + 3) * (interval + check) + 30.0


def lock_seconds(ext: Any) -> float:
    """The drill lock lasts one lease past its last renewal: a killed drill blocks the next
    one no longer than its fault lasts."""
    return drill_lease.lease_seconds(ext) + 1.0


def _table(ext: Any) -> sa.Table:
    return ext.models.Drill.__table__


def drill_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "reference": reference("drill", row.id, row.started_at), "type": row.drill_type,
            "started_at": row.started_at.isoformat() + "Z", "participants": row.participants or [],
            "ended_at": row.ended_at.isoformat() + "Z" if row.ended_at else None, "result": row.result or {}}


def get_drill(ext: Any, drill_id: int) -> dict[str, Any] | None:
    t = _table(ext)
    with ext.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == drill_id)).first()
    return drill_dict(row) if row else None


def save_result(ext: Any, drill_id: int, result: dict[str, Any], ended: bool = False) -> None:
    t = _table(ext)
    values: dict[str, Any] = {"result": result}
    if ended:
        values["ended_at"] = utcnow()
    with ext.engine.begin() as conn:
        conn.execute(t.update().where(t.c.id == drill_id).values(**values))


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Let the restore finish even if Ctrl-C is pressed again (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def monitor_problem(ext: Any) -> str | None:
    """Why no monitor would see the drill (one line), or None while one beats."""
    status = heartbeat_status(ext)
    if status["state"] == "fresh":
        return None
    return f"no monitor is running to detect it: {status['detail']}"


def monitor_events(ext: Any, since: dt.datetime) -> list[dict[str, Any]]:
    """Events the monitor detected at or after ``since``, oldest first."""
    t = ext.models.EmergencyEvent.__table__
    with ext.engine.connect() as conn:
        ids = conn.execute(sa.select(t.c.id).where(t.c.triggered_by == MONITOR, t.c.detected_at >= since)
                           .order_by(t.c.id)).scalars().all()
    return [e for e in (emergency.get_event(ext, int(i)) for i in ids) if e is not None]


def timing(event: dict[str, Any] | None) -> dict[str, Any]:
    """MTTD and MTTR of a monitor event (seconds; None where it has not happened)."""
    if event is None:
        return {"detection_seconds": None, "recovery_seconds": None}

    def at(key: str) -> dt.datetime | None:
        value = event.get(key)
        return dt.datetime.fromisoformat(value.rstrip("Z")) if value else None

    started, detected, resolved = at("started_at"), at("detected_at"), at("resolved_at")
    return {"detection_seconds": round((detected - started).total_seconds(), 3) if started and detected else None,
            "recovery_seconds": round((resolved - detected).total_seconds(), 3) if resolved and detected else None}


def _plan(kind: DrillType, duration: float) -> list[str]:
    if kind.rollback:
        return [f"{kind.description}, timed",
                "send the test user (else an admin) a probe notification and see it delivered by the "
                "fallbacks (not the socket)",
                f"stay rolled back until {duration:g} s have passed since the rollback",
                "restore real-time delivery (restore --confirm), timed, and check real time is back"]
    return [f"{kind.description} (for at most {duration:g} s)",
            f"wait for the monitor to open a {kind.failure_type} event (detection)",
            "take the fault back and wait for the monitor to resolve the event (recovery)"]


def probe_user(ext: Any) -> str | None:
    """Who gets a rollback drill's probe: the test user (``TEST_USER_ID``), else the first admin."""
    configured = ext.app.config.get("NOTIFY_EMERGENCY_TEST_USER_ID")
    if configured:
        return str(configured)
    admins = admin_user_ids(ext)
    return admins[0] if admins else None


def requirement_problem(ext: Any, kind: DrillType) -> str | None:
    """Why this app cannot run a ``kind`` drill (one line), or None."""
    if kind.rollback:
        uid = probe_user(ext)
        if uid is None:
            return ("no user to send the probe notification to: set NOTIFY_EMERGENCY_TEST_USER_ID "
                    "(or NOTIFY_EMERGENCY_ADMIN_USER_IDS)")
        waiting = undelivered(ext, uid)
        if waiting:  # the probe's page request would take them from that user
            return (f"the probe user {uid} has {waiting} undelivered notification(s) a page request would take: "
                    "set NOTIFY_EMERGENCY_TEST_USER_ID to a dedicated test user")
        return None
    return drill_faults.requirement_problem(ext, kind.faults)


def execute_drill(ext: Any, *, drill_type: str, duration: float, participants: list[str], actor: str,
                  source: str = "cli", dry_run: bool = False,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one drill (see the module doc); the drill as stored, with ``ok``."""
    kind = validate(drill_type, duration)
    say = progress or (lambda _msg: None)
    plan = _plan(kind, duration)
    mode = ext.control.read("mode", "normal") or "normal"
    open_event = emergency.current_event(ext)
    if dry_run:
        problems = [f"delivery mode is '{mode}'"] if mode != "normal" else []
        problems += [f"emergency event #{open_event['id']} is open"] if open_event else []
        problems += [p for p in (monitor_problem(ext), requirement_problem(ext, kind)) if p]
        return {"ok": not problems, "dry_run": True, "type": kind.name, "plan": plan, "problems": problems}
    if mode != "normal" or open_event:
        raise DrillError(f"a real emergency is in progress (mode '{mode}'"
                         + (f", event #{open_event['id']}" if open_event else "") + "): drills run on a calm system only.")
    if not ext.state.acquire_lock(LOCK, lock_seconds(ext)):
        raise DrillError("another drill is running: wait for it to finish.")
    t = _table(ext)
    try:
        with ext.engine.begin() as conn:
            drill_id = int(conn.execute(t.insert().values(
                drill_type=kind.name, started_at=utcnow(), participants=participants,
                result={"status": "running", "duration": duration})).inserted_primary_key[0])
    except BaseException:
        ext.state.release_lock(LOCK)
        raise
    ext.audit.record(actor, "execute-drill", source, {"type": kind.name, "duration": duration,
                                                      "participants": participants}, detail=f"drill #{drill_id} started")
    result: dict[str, Any] = {"status": "running", "drill_id": drill_id, "type": kind.name, "duration": duration,
                              "plan": plan, "expected_failure_type": kind.failure_type,
                              "expected_failure_types": list(kind.expected), "injected": [],
                              "fault_started_at": None, "fault_ended_at": None, "event_id": None,
                              "detected": False, "detection_seconds": None, "recovery_seconds": None,
                              "restored": {}}
    try:
        problem = monitor_problem(ext) or requirement_problem(ext, kind)
        if problem:
            result.update(status="failed", error=f"not run: {problem}")
        elif kind.rollback:
            _run_rollback(ext, kind, drill_id, duration, actor, source, result, say)
        else:
            _run(ext, kind, drill_id, duration, actor, result, say)
    except KeyboardInterrupt:
        result.update(status="aborted", error="interrupted (Ctrl-C)")
    except Exception as exc:  # take the fault back anyway, and say what broke
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        with _no_interrupt():
            if "rollback" in result["injected"]:
                _restore(ext, drill_id, actor, source, result)
            elif result["injected"]:
                _take_back(ext, drill_id, actor, result)
            save_result(ext, drill_id, result, ended=True)
            if result["restored"].get("all", True):
                drill_lease.release(ext, drill_id, actor)
            ext.state.release_lock(LOCK)
    ok = result["status"] == "completed"
    ext.audit.record(actor, "execute-drill", source, {"drill_id": drill_id}, outcome="ok" if ok else "failed",
                     detail=f"drill #{drill_id} {result['status']}" + (f": {result['error']}" if result.get("error") else ""),
                     event_id=result["event_id"])
    return dict(get_drill(ext, drill_id) or {}, ok=ok)


def _run(ext: Any, kind: DrillType, drill_id: int, duration: float, actor: str, result: dict[str, Any],
         say: Callable[[str], None]) -> None:
    """Inject, wait for the monitor's detection, take back, wait for its resolution."""
    renewed = [0.0]

    def keep_lease(force: bool = False) -> None:
        """Renew the drill lock, and while the fault lasts the lease and the fault's expiry
        with it: if this process dies, all of them run out."""
        if force or time.monotonic() - renewed[0] >= drill_lease.lease_seconds(ext) / 3:
            ext.state.acquire_lock(LOCK, lock_seconds(ext))
            if result["fault_ended_at"] is None:
                drill_lease.hold(ext, drill_id, injected=result["injected"], snapshot={}, actor=actor)
                drill_faults.inject(ext, drill_id, list(kind.faults), time.time() + drill_lease.lease_seconds(ext), actor)
            renewed[0] = time.monotonic()

    # the lease names the fault before it is injected, so a kill -9 between the two still undoes it
    result["injected"] = list(kind.faults)
    injected_at = time.time()
    since = utc_from_epoch(injected_at)
    result["fault_started_at"] = since.isoformat() + "Z"
    keep_lease(force=True)
    save_result(ext, drill_id, result)
    say(f"Drill #{drill_id}: {kind.description}; waiting up to {duration:g} s for the monitor.")
    deadline = time.monotonic() + float(duration)
    event = None
    announced = None
    while event is None and announced is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        keep_lease()
        event = _matching(ext, kind, since, result)
        announced = None if event is not None else _announced(ext, kind, since)
    if announced is not None:  # detected while the database is down: written when it is back
        result["announced_detection"] = announced
        say(f"The monitor detected {kind.failure_type} at {announced['detected_at']} (its event is written "
            "when the database is back).")
    _take_back(ext, drill_id, actor, result)
    if result["restored"]["all"]:
        drill_lease.release(ext, drill_id, actor)  # nothing left for the monitor to revert
    fault_ended = dt.datetime.fromisoformat(str(result["fault_ended_at"]).rstrip("Z"))
    say(f"Fault taken back after {time.time() - injected_at:.2f} s; waiting for the monitor's "
        + ("resolution." if event is not None else "event."))
    # the monitor resolves its event once its checks pass again; a database outage is written
    # only now that the database is back
    wait_until = time.monotonic() + recovery_wait(ext)
    while time.monotonic() < wait_until:
        current = _matching(ext, kind, since, result)
        if current is not None:
            event = current
            if event["status"] == "resolved":
                break
        time.sleep(POLL_SECONDS)
        keep_lease()
    detected_in_fault = event is not None and dt.datetime.fromisoformat(
        event["detected_at"].rstrip("Z")) <= fault_ended
    if event is not None:
        result["event_id"] = event["id"]
        result["failure_start"] = (event.get("evidence") or {}).get("failure_start") \
            if isinstance(event.get("evidence"), dict) else None
        result.update(timing(event))
    result["detected"] = detected_in_fault
    result["resolved"] = event is not None and event["status"] == "resolved"
    if event is None or not detected_in_fault:
        others = ", ".join(f"#{e['id']} {e['failure_type']}" for e in result.get("other_events", [])) or "none"
        result.update(status="not-detected",
                      error=f"not detected: the monitor opened no {kind.failure_type} event while the fault lasted "
                            f"({duration:g} s; other events: {others})")
    elif event["status"] != "resolved":
        result.update(status="failed", error=f"not resolved: the monitor's event #{event['id']} is still open "
                                             f"{recovery_wait(ext):.0f} s after the fault was taken back")
    else:
        result["status"] = "completed"
        say(f"Monitor event #{event['id']} ({event['failure_type']}): MTTD {result['detection_seconds']:.2f} s, "
            f"MTTR {result['recovery_seconds']:.2f} s.")


def _announced(ext: Any, kind: DrillType, since: dt.datetime) -> dict[str, Any] | None:
    """The monitor's detection of the drill's failure type that it cannot write yet (the
    database is down; see ..automation.monitor.pending_detection), or None."""
    try:
        pending = pending_detection(ext)
    except Exception:  # Redis down too: wait for the event
        return None
    if not pending or pending.get("failure_type") not in kind.expected:
        return None
    detected = dt.datetime.fromisoformat(str(pending.get("detected_at", "")).rstrip("Z") or "1970-01-01")
    return pending if detected >= since else None


def _matching(ext: Any, kind: DrillType, since: dt.datetime, result: dict[str, Any]) -> dict[str, Any] | None:
    """The monitor's event of the drill's failure type, detected since the fault began."""
    found = None
    others = []
    for event in monitor_events(ext, since):
        if event["failure_type"] in kind.expected and found is None:
            found = event
        elif event["failure_type"] not in kind.expected:
            others.append({"id": event["id"], "failure_type": event["failure_type"], "level": event["level"]})
    result["other_events"] = others
    return found


def _take_back(ext: Any, drill_id: int, actor: str, result: dict[str, Any]) -> None:
    """Take the fault back (once) and say whether the switch is clear."""
    if result.get("fault_ended_at") is None:
        result["fault_ended_at"] = utcnow().isoformat() + "Z"
    problems: list[str] = []
    try:
        drill_faults.take_back(ext, actor)
    except Exception as exc:  # the lease still covers it: the monitor takes it back
        problems.append(f"{type(exc).__name__}: {exc}")
    try:
        clear = drill_faults.current(ext) is None
    except Exception as exc:
        clear, problems = False, problems + [f"{type(exc).__name__}: {exc}"]
    result["restored"] = {"fault": clear, "all": clear and not problems}
    if problems:
        result["restore_problems"] = problems


# -- complete_rollback: the operator's rollback and restore, timed --------------------------
def _run_rollback(ext: Any, kind: DrillType, drill_id: int, duration: float, actor: str, source: str,
                  result: dict[str, Any], say: Callable[[str], None]) -> None:
    """Roll back, probe the fallbacks, stay rolled back for ``duration``, restore."""
    renewed = [0.0]

    def keep_lease(*_args: Any, force: bool = False) -> None:
        """Renew the drill lock and the lease that names the rollback: if this process dies
        while rolled back, the monitor restores."""
        if force or time.monotonic() - renewed[0] >= drill_lease.lease_seconds(ext) / 3:
            ext.state.acquire_lock(LOCK, lock_seconds(ext))
            if "rollback" in result["injected"] and result.get("restore_seconds") is None:
                drill_lease.hold(ext, drill_id, injected=result["injected"], snapshot={}, actor=actor)
            renewed[0] = time.monotonic()

    result.update(rollback_seconds=None, restore_seconds=None, probe=None, realtime_back=None)
    result["injected"] = ["rollback"]  # the lease names it before it starts
    keep_lease(force=True)
    result["fault_started_at"] = utcnow().isoformat() + "Z"
    save_result(ext, drill_id, result)
    say(f"Drill #{drill_id}: {kind.description}.")
    started = time.monotonic()
    try:
        done = rollback(ext, reason=f"drill #{drill_id}: complete system rollback", actor=actor, source=source,
                        confirm=True, admin=True, on_step=keep_lease)
    except RollbackError as exc:
        if exc.__cause__ is None:  # refused (e.g. another rollback runs): nothing of ours to restore
            result["injected"] = []
            drill_lease.release(ext, drill_id, actor)
        raise
    result["rollback_seconds"] = round(time.monotonic() - started, 3)
    result["rollback_operation"] = done.get("operation_id")
    rolled_back = time.monotonic()
    save_result(ext, drill_id, result)
    say(f"Rolled back ({done.get('operation_id')}) in {result['rollback_seconds']:.2f} s; probing the fallbacks.")
    admin = str(probe_user(ext))
    ok, detail, row = deliver_test_notification(ext, admin, f"Drill #{drill_id}: rollback probe",
                                                "Delivered while real time is rolled back.")
    channel = row.get("channel")
    by_fallback = ok and channel not in (None, "realtime")
    result["probe"] = {"ok": by_fallback, "user_id": admin, "notification_id": row.get("id"),
                       "channel": channel, "detail": detail if ok and by_fallback else
                       f"{detail} (not by a fallback)" if ok else detail}
    save_result(ext, drill_id, result)
    say(f"Probe: {result['probe']['detail']}.")
    while time.monotonic() - rolled_back < float(duration):
        time.sleep(POLL_SECONDS)
        keep_lease()
    _restore(ext, drill_id, actor, source, result)
    say(f"Restored in {result['restore_seconds']:.2f} s" if result.get("restore_seconds") is not None
        else f"Restore failed: {result.get('restore_error')}")
    problems = []
    if not result["probe"]["ok"]:
        problems.append(f"probe: {result['probe']['detail']}")
    if result.get("restore_seconds") is None:
        problems.append(f"restore: {result.get('restore_error')}")
    elif not result.get("realtime_back"):
        problems.append(f"real time is not back after the restore: {result.get('realtime_detail')}")
    if problems:
        result.update(status="failed", error="; ".join(problems))
    else:
        result["status"] = "completed"


def _restore(ext: Any, drill_id: int, actor: str, source: str, result: dict[str, Any]) -> None:
    """Restore real time after a rollback drill (once), timed; see whether real time is back."""
    if result.get("restore_seconds") is not None or result.get("restore_attempted"):
        return
    result["restore_attempted"] = True
    result["fault_ended_at"] = utcnow().isoformat() + "Z"
    started = time.monotonic()
    try:
        done = restore(ext, actor=actor, source=source, confirm=True, admin=True,
                       reason=f"drill #{drill_id}: end of the rollback drill")
    except RollbackError as exc:  # the lease stays: the monitor restores once it can
        result["restore_error"] = str(exc)
        result["restored"] = {"rollback": False, "all": False}
        return
    result["restore_seconds"] = round(time.monotonic() - started, 3)
    result["restore_operation"] = done.get("operation_id")
    hold = done.get("hold")
    if hold and hold.get("by") == actor:  # a drill's restore does not keep the automatic rollback off
        operator_hold.release(ext, actor)
    ok, detail = check_realtime(ext, health_checks(ext))
    result.update(realtime_back=ok, realtime_detail=detail, restored={"rollback": True, "all": True})

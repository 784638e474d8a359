"""Emergency drills: a real failure, injected reversibly, and the response measured.

``execute-drill`` records a :class:`Drill` row, injects the failure, waits until the
system's own view shows it (the dispatcher's routing, the ``realtime`` health check):
that is the detection time. It then activates emergency mode with a drill event (evidence
``{"drill": true}``), sends a probe notification to a test user, holds the failure for the
drill's duration, restores everything and leaves emergency mode: detection to restoration
is the recovery time. Restoring runs in ``finally``, so Ctrl-C or an error still restores;
and while it runs the drill holds a lease (:mod:`..respond.drill_lease`) naming what it
injected, so if its process is killed the monitor's next tick after the lease runs out
reverts it.

=====================  ===============================================================
drill                  what is injected
=====================  ===============================================================
websocket_failure      real-time delivery paused in every worker (``paused.realtime``)
notification_failure   the circuit breaker tripped open
database_connectivity  simulated: a connection to an unreachable throwaway database
                       fails, recorded as evidence; the real database is never touched
complete_rollback      the rollback rehearsed on a throwaway copy (``test-rollback``)
multi_component        all of the above but the rollback
=====================  ===============================================================

``evaluate-drill`` (:mod:`.drill_evaluation`) scores a drill against the runbook's targets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from ..communicate import reference
from ..detect import run_health_checks
from ..models import utcnow
from ..respond import drill_lease, emergency
from ..rollback import admin_user_ids, test_rollback

MAX_DURATION = 3600.0
MAX_PARTICIPANTS = 20
LOCK = "drill"
POLL_SECONDS = 0.1


class DrillError(Exception):
    """The drill cannot run now; the message says why and what to do."""


@dataclass(frozen=True)
class DrillType:
    """What a drill injects, and how its event is classified."""

    name: str
    failure_type: str
    level: int
    injects: tuple[str, ...]


DRILL_TYPES: dict[str, DrillType] = {d.name: d for d in (
    DrillType("notification_failure", "message_delivery", 2, ("breaker",)),
    DrillType("websocket_failure", "realtime_connection", 2, ("realtime",)),
    DrillType("database_connectivity", "database_persistence", 2, ("database",)),
    DrillType("complete_rollback", "manual", 1, ("rollback",)),
    DrillType("multi_component", "realtime_connection", 1, ("realtime", "breaker", "database")),
)}
DESCRIPTIONS = {
    "realtime": "pause real-time delivery in every worker (notifications take the fallbacks)",
    "breaker": "trip the circuit breaker open (the real-time path is refused)",
    "database": "simulate a database outage: connect to an unreachable throwaway database (the real one is untouched)",
    "rollback": "rehearse the complete rollback and restore on a throwaway copy of the data",
}


def parse_participants(text: str | None) -> list[str]:
    """``'a,b'`` -> ``['a', 'b']``; ValueError when empty or unreasonable."""
    names = list(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    if not names:
        raise ValueError("--participants is required: list who takes part, e.g. --participants admin1,admin2.")
    if len(names) > MAX_PARTICIPANTS or any(len(n) > 64 for n in names):
        raise ValueError(f"--participants: at most {MAX_PARTICIPANTS} names of at most 64 characters each.")
    return names


def validate(drill_type: str, duration: float) -> DrillType:
    if drill_type not in DRILL_TYPES:
        raise ValueError(f"--type must be one of {', '.join(DRILL_TYPES)}; got {drill_type!r}.")
    if not 0 < float(duration) <= MAX_DURATION:
        raise ValueError(f"--duration must be more than 0 and at most {int(MAX_DURATION)} seconds; got {duration}.")
    return DRILL_TYPES[drill_type]


def probe_user(ext: Any, given: str | None) -> str:
    """Who receives the probe: ``given``, ``NOTIFY_EMERGENCY_TEST_USER_ID``, or the first admin."""
    uid = given or ext.app.config["NOTIFY_EMERGENCY_TEST_USER_ID"]
    if not uid:
        admins = admin_user_ids(ext)
        uid = admins[0] if admins else None
    if not uid:
        raise ValueError("no user to receive the probe notification: pass --probe-user ID or set "
                         "NOTIFY_EMERGENCY_TEST_USER_ID.")
    return str(ext.dispatcher.validate(uid, "Drill probe", "probe", "normal", "drill", None, None))


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


def simulate_database_outage() -> dict[str, Any]:
    """Try a throwaway database that cannot exist; the failure is the evidence."""
    directory = tempfile.mkdtemp(prefix="notify-emergency-drill-")
    missing = os.path.join(directory, "no-such-directory", "drill.sqlite")
    engine = sa.create_engine(f"sqlite:///{missing}")
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        error = None
    except sa.exc.OperationalError as exc:
        error = f"{type(exc).__name__}: {exc.orig}"
    finally:
        engine.dispose()
        os.rmdir(directory)
    return {"simulated": True, "target": "throwaway sqlite (unreachable by design)", "failed": error is not None,
            "error": error, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


def detect(ext: Any, kind: DrillType, uid: str, evidence: dict[str, Any]) -> dict[str, Any] | None:
    """What the system sees of the injected failure now, or None while it sees nothing."""
    seen: dict[str, Any] = {}
    route = ext.dispatcher.route(uid)
    if route in ("paused", "breaker-open") or (route or "").startswith("mode-"):
        seen["route"] = route
    if "breaker" in kind.injects and ext.breaker.current == "open":
        seen["breaker"] = "open"
    if "database" in kind.injects and evidence.get("database", {}).get("failed"):
        seen["database"] = evidence["database"]["error"]
    if "rollback" in kind.injects:
        seen["rollback"] = "rehearsal requested"
    check = run_health_checks(ext, only=["realtime"]).to_dict()["checks"]["realtime"]
    if check["status"] != "ok":
        seen["health.realtime"] = check["status"]
    needed = {"realtime": "route", "breaker": "breaker", "database": "database", "rollback": "rollback"}
    return seen if all(needed[i] in seen for i in kind.injects) else None


def execute_drill(ext: Any, *, drill_type: str, duration: float, participants: list[str], actor: str,
                  source: str = "cli", probe: str | None = None, dry_run: bool = False,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one drill (see the module doc); its result, also stored on the Drill row."""
    kind = validate(drill_type, duration)
    say = progress or (lambda _msg: None)
    uid = probe_user(ext, probe)
    plan = [DESCRIPTIONS[i] for i in kind.injects] + [
        "wait until the system sees it (detection time)",
        f"activate emergency mode with a level {kind.level} drill event ({kind.failure_type})",
        f"send a probe notification to user {uid}",
        f"hold the failure for {duration:g} s, then restore everything and leave emergency mode"]
    mode = ext.control.read("mode", "normal") or "normal"
    open_event = emergency.current_event(ext)
    if dry_run:
        problems = [f"delivery mode is '{mode}'"] if mode != "normal" else []
        problems += [f"emergency event #{open_event['id']} is open"] if open_event else []
        return {"ok": not problems, "dry_run": True, "type": drill_type, "probe_user": uid, "plan": plan,
                "problems": problems}
    if mode != "normal" or open_event:
        raise DrillError(f"a real emergency is in progress (mode '{mode}'"
                         + (f", event #{open_event['id']}" if open_event else "") + "): drills run on a calm system only.")
    if not ext.state.acquire_lock(LOCK, float(duration) + 120.0):
        raise DrillError("another drill is running: wait for it to finish.")
    snapshot = {"paused": bool((ext.control.read("paused", {}) or {}).get("realtime")),
                "breaker": ext.breaker.current}
    t = _table(ext)
    with ext.engine.begin() as conn:
        drill_id = int(conn.execute(t.insert().values(
            drill_type=drill_type, started_at=utcnow(), participants=participants,
            result={"status": "running", "duration": duration, "probe_user": uid})).inserted_primary_key[0])
    ext.audit.record(actor, "execute-drill", source, {"type": drill_type, "duration": duration,
                                                      "participants": participants}, detail=f"drill #{drill_id} started")
    result: dict[str, Any] = {"status": "running", "drill_id": drill_id, "type": drill_type, "duration": duration, "probe_user": uid,
                              "plan": plan, "injected": [], "evidence": {}, "event_id": None, "probe": None,
                              "detected": False, "detection_seconds": None, "recovery_seconds": None}
    started = time.monotonic()
    injected_at = utcnow()
    detected_at: float | None = None
    renewed = [0.0]

    def keep_lease(force: bool = False) -> None:
        """Renew the drill's lease (see ..respond.drill_lease): if this process dies, the
        monitor reverts what the lease names once it runs out."""
        if force or time.monotonic() - renewed[0] >= drill_lease.lease_seconds(ext) / 3:
            drill_lease.hold(ext, drill_id, injected=result["injected"], snapshot=snapshot, actor=actor,
                             event_id=result["event_id"])
            renewed[0] = time.monotonic()

    try:
        # each injection is noted (in the result and the lease) before it is made, so a Ctrl-C
        # or a kill -9 between the two still undoes it
        if "realtime" in kind.injects:
            result["injected"].append("realtime")
            keep_lease(force=True)
            ext.control.set_paused("realtime", True, actor)
        if "breaker" in kind.injects:
            result["injected"].append("breaker")
            keep_lease(force=True)
            ext.breaker.trip()
        if "database" in kind.injects:
            result["evidence"]["database"] = simulate_database_outage()
            result["injected"].append("database")
        keep_lease(force=True)  # also before the drill's emergency is activated
        say(f"Drill #{drill_id}: injected {', '.join(result['injected']) or 'the rollback rehearsal'}.")
        deadline = started + float(duration)
        seen = detect(ext, kind, uid, result["evidence"])
        while seen is None and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            keep_lease()
            seen = detect(ext, kind, uid, result["evidence"])
        if seen is not None:
            detected_at = time.monotonic()
            result.update(detected=True, detection_seconds=round(detected_at - started, 3))
            result["evidence"]["detection"] = seen
            say(f"Detected after {result['detection_seconds']:.2f} s: {seen}.")
        event = emergency.activate(ext, reason=f"Drill #{drill_id}: {drill_type}", triggered_by=actor,
                                   level=kind.level, failure_type=kind.failure_type, source=source, actor=actor,
                                   evidence={"drill": True, "drill_id": drill_id, **result["evidence"]})
        result["event_id"] = event["id"]
        keep_lease(force=True)
        _backdate(ext, event["id"], injected_at)
        nid = ext.dispatcher.send(uid, f"Emergency drill #{drill_id}",
                                  "An emergency drill is running: this notification should reach you once.",
                                  "normal", "drill")
        row = ext.store.get(nid) or {}
        result["probe"] = {"notification_id": nid, "user_id": uid, "title": f"Emergency drill #{drill_id}",
                           "realtime_tried": row.get("realtime_deadline") is not None}
        say(f"Emergency event #{event['id']} open; probe notification #{nid} sent to user {uid}.")
        if "rollback" in kind.injects:
            rehearsal = test_rollback(ext, actor=actor)
            result["rollback_rehearsal"] = {k: rehearsal.get(k) for k in ("ok", "checks", "error", "seconds")}
            say(f"Rollback rehearsal on a copy: {'passed' if rehearsal.get('ok') else 'FAILED'}.")
        save_result(ext, drill_id, result)
        while time.monotonic() < deadline:
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            keep_lease()
        result["status"] = "completed"
    except KeyboardInterrupt:
        result["status"] = "aborted"
        result["error"] = "interrupted (Ctrl-C)"
    except Exception as exc:  # restore anyway, and say what broke
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        with _no_interrupt():
            _restore(ext, result, snapshot, actor, source)
            if detected_at is not None and result["restored"]["all"]:
                result["recovery_seconds"] = round(time.monotonic() - detected_at, 3)
            save_result(ext, drill_id, result, ended=True)
            if result["restored"]["all"]:
                drill_lease.release(ext, drill_id, actor)
            ext.state.release_lock(LOCK)
    ext.audit.record(actor, "execute-drill", source, {"drill_id": drill_id}, outcome="ok" if result["status"] ==
                     "completed" and result["restored"]["all"] else "failed",
                     detail=f"drill #{drill_id} {result['status']}", event_id=result["event_id"])
    say(f"Restored: {'everything' if result['restored']['all'] else result['restored']}.")
    return dict(get_drill(ext, drill_id) or {}, ok=result["status"] == "completed" and result["restored"]["all"])


def _backdate(ext: Any, event_id: int, started_at: Any) -> None:
    """The drill's failure started when it was injected, not when the event was opened."""
    t = ext.models.EmergencyEvent.__table__
    with ext.engine.begin() as conn:
        conn.execute(t.update().where(t.c.id == event_id).values(started_at=started_at))


def _restore(ext: Any, result: dict[str, Any], snapshot: dict[str, Any], actor: str, source: str) -> None:
    """Undo every injection, leave emergency mode, and check each part is back."""
    problems: list[str] = []
    steps: list[Callable[[], None]] = []
    if "realtime" in result["injected"]:
        steps.append(lambda: ext.control.set_paused("realtime", snapshot["paused"], actor))
    if "breaker" in result["injected"] and snapshot["breaker"] != "open":
        steps.append(ext.breaker.close)
    for undo in steps:
        try:
            undo()
        except Exception as exc:  # keep undoing the rest
            problems.append(f"{type(exc).__name__}: {exc}")
    if not result.get("event_id"):
        # the activation may have stored the event and failed after (a signal receiver raising)
        event = emergency.current_event(ext)
        if event and isinstance(event.get("evidence"), dict) and event["evidence"].get("drill_id") == result["drill_id"]:
            result["event_id"] = event["id"]
    if result.get("event_id"):
        try:
            try:
                out = emergency.deactivate(ext, resolved_by=actor, source=source)
                result["deactivation"] = "health checks passed"
            except emergency.EmergencyError as exc:  # checks fail for reasons of their own
                out = emergency.deactivate(ext, resolved_by=actor, force=True, source=source,
                                           reason=f"drill ended, its injected failure removed ({exc})")
                result["deactivation"] = f"forced: {exc}"
        except Exception as exc:  # report it; the rest of the restore still runs
            problems.append(f"deactivate: {type(exc).__name__}: {exc}")
            out = {}
        result["event_resolved"] = bool((out.get("event") or {}).get("status") == "resolved")
    paused = bool((ext.control.read("paused", {}) or {}).get("realtime"))
    restored = {"realtime": paused == snapshot["paused"],
                "breaker": ext.breaker.current == snapshot["breaker"]
                or (snapshot["breaker"] == "closed" and ext.breaker.current != "open"),
                "mode": (ext.control.read("mode", "normal") or "normal") == "normal",
                "event": result.get("event_resolved", True)}
    restored["all"] = all(restored.values()) and not problems
    result["restored"] = restored
    if problems:
        result["restore_problems"] = problems

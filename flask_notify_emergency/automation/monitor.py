"""The background monitor: one per cluster, every ``MONITOR_INTERVAL`` seconds it checks,
classifies, opens an emergency and runs its recovery plan, and leaves emergency mode only
after ``HEALTHY_CHECKS_TO_RECOVER`` healthy checks in a row (so a flapping dependency does
not toggle the mode on and off).

Election: each serving worker runs a monitor thread, but a tick only happens in the one
holding the shared lock ``monitor`` (``state.acquire_lock``, TTL three intervals, renewed
every tick). With Redis the lock is cluster-wide; with the memory backend there is one
process anyway. If Redis itself is down, each worker falls back to its own lock; duplicate
events are avoided because activation re-reads the open event from the database.

The thread starts lazily on the first real request a worker serves (``before_request``),
so ``flask emergency ...`` commands never start one, nor do synthetic requests made by the
CLI's page checks. ``NOTIFY_EMERGENCY_MONITOR_ENABLED = False`` keeps it off; the monitor
object still exists as ``ext.monitor`` and :meth:`Monitor.tick` runs one iteration on demand.
A paused ``monitor`` service (``stop-services``) makes ticks do nothing.

Only events the monitor opened are resolved by it (``resolved_by="monitor"``); after
leaving emergency mode it replays the backlog in the background at ``REPLAY_RATE``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import sqlalchemy as sa

from ..communicate import alert_event
from ..detect import FAILED_CHECK, Classification, classify, run_health_checks, utc_from_epoch
from ..models import utcnow
from ..respond import drill_lease, emergency, replay_backlog
from ..rollback import execute as rollback
from .recovery import auto_recover

log = logging.getLogger("flask_notify_emergency")

LOCK = "monitor"
ACTOR = "monitor"
#: Control key (database only) with the last tick: services.verify_services reads it.
HEARTBEAT_KEY = "monitor_heartbeat"
#: The failure type of a database outage (resolved as soon as the database answers again).
DATABASE_FAILURE = "database_persistence"
#: Set in a request's WSGI environ by the CLI's own page checks: not a real request.


class Monitor:
    """Health monitor of one app; ``tick()`` is one iteration."""

    def __init__(self, app: Any, ext: Any) -> None:
        cfg = app.config
        self.app = app
        self.ext = ext
        self.interval = float(cfg["NOTIFY_EMERGENCY_MONITOR_INTERVAL"])
        self.healthy_needed = int(cfg["NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER"])
        self.healthy_streak = 0
        self.last: dict[str, Any] | None = None
        self.last_replay: dict[str, Any] | None = None
        self.is_leader = False
        self._stop = threading.Event()
        self._tick_lock = threading.Lock()
        #: (report, started, finished) of this tick's health check, for the evidence log
        self._report: tuple[Any, float, float] | None = None
        #: what was detected while the database was down, written when it is back
        self.outage_detection: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None

    # -- the thread ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start the background thread (once); True if it was started now."""
        if self.running:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="notify-emergency-monitor", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, interrupting a recovery backoff, and give up the lock."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.is_leader:
            try:
                self.ext.state.release_lock(LOCK)
            except Exception:
                pass
            self.is_leader = False

    def elect(self) -> bool:
        """Take or renew the cluster's monitor lock; True if this process is the monitor."""
        self.is_leader = bool(self.ext.state.acquire_lock(LOCK, self.interval * 3))
        return self.is_leader

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.elect():
                    self.tick()
            except Exception:  # the monitor must outlive any one bad tick
                log.exception("flask-notify-emergency: monitor tick failed")
            self._stop.wait(self.interval)

    # -- one iteration ---------------------------------------------------------------------
    def tick(self) -> dict[str, Any]:
        """Check, classify, act; return what happened (also kept as ``self.last``)."""
        with self._tick_lock, self.app.app_context():
            self._report = None
            result = self._tick()
            result["healthy_streak"] = self.healthy_streak
            self.last = result
            self._record_evidence(result)
            self._heartbeat(result)
            return result

    def _tick(self) -> dict[str, Any]:
        ext = self.ext
        if ext.control.paused().get("monitor"):
            return {"status": "paused"}
        self._revert_abandoned_drill()
        report = self._check()
        c = classify(report)
        health = {"status": report.status, "score": report.score, "failing": report.failing}
        try:
            self._write_outage_detection()
            event = emergency.current_event(ext)
            mode = ext.control.read("mode", "normal") or "normal"
        except sa.exc.SQLAlchemyError as exc:
            return self._database_down(report, c, exc, health)
        if c is not None:
            self.healthy_streak = 0
            if event is None:
                outcome = auto_recover(ext, ACTOR, "monitor", report=report, classification=c, stop=self._stop)
                return {"status": "activated", "health": health, "classification": c.to_dict(),
                        "event": outcome.get("event"), "recovery": outcome["status"]}
            changed = self._follow(event, mode, c)
            self._maybe_rollback()
            return {"status": "emergency", "health": health, "classification": c.to_dict(),
                    "event": emergency.get_event(ext, event["id"]), "changed": changed}
        if event is None:
            self.healthy_streak = 0
            return {"status": "healthy", "health": health}
        if event.get("triggered_by") != ACTOR or mode == "legacy":
            # an operator's emergency, or a rollback: people decide when it ends
            self.healthy_streak = 0
            return {"status": "emergency", "health": health, "event": event, "note": "not opened by the monitor"}
        self.healthy_streak += 1
        if self.healthy_streak < self.healthy_needed:
            return {"status": "recovering", "health": health, "event": event,
                    "note": f"healthy {self.healthy_streak}/{self.healthy_needed} in a row"}
        try:
            resolved = emergency.deactivate(ext, resolved_by=ACTOR, source="monitor", recovered=True)
        except emergency.EmergencyError as exc:  # a check failed again in the meantime
            self.healthy_streak = 0
            return {"status": "emergency", "health": health, "event": event, "note": str(exc)}
        self.healthy_streak = 0
        self._replay_later(event["id"])
        return {"status": "recovered", "health": health, "event": resolved["event"], "mode": resolved["mode"]}

    def _follow(self, event: dict[str, Any], mode: str, c: Classification) -> dict[str, Any] | None:
        """A monitor event that got worse: raise its level, switch emergency mode on if due."""
        if event.get("triggered_by") != ACTOR or c.level >= int(event["level"]):
            return None
        ext = self.ext
        t = ext.models.EmergencyEvent.__table__
        with ext.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == event["id"]).values(level=c.level))
        detail = {"from_level": event["level"], "to_level": c.level, "failure_type": c.failure_type,
                  "reason": c.reason}
        if mode == "normal" and c.level <= ext.app.config["NOTIFY_EMERGENCY_MONITOR_ACTIVATE_LEVEL"]:
            ext.control.set_mode("emergency", ACTOR)
            detail["mode"] = "emergency"
        emergency.record_action(ext, event["id"], "reclassify", "ok", detail, ACTOR)
        ext.audit.record(ACTOR, "reclassify", "monitor", detail, event_id=event["id"])
        try:
            alert_event(ext, emergency.get_event(ext, event["id"]) or event, "escalated", level=c.level,
                        note=f"worse: {c.reason}")
        except Exception as exc:
            log.warning("flask-notify-emergency: escalation alert failed: %s", exc)
        return detail

    # -- the drills' always-revert guard ----------------------------------------------------
    def _revert_abandoned_drill(self) -> None:
        """A drill whose process died (its lease ran out) is reverted here, before checking."""
        try:
            reverted = drill_lease.revert_if_abandoned(self.ext, ACTOR)
        except sa.exc.SQLAlchemyError as exc:  # the database is down: the tick reports that
            log.debug("flask-notify-emergency: could not check the drill lease: %s", exc)
            return
        if reverted:
            log.warning("flask-notify-emergency: drill #%s was abandoned by its process; the monitor "
                        "reverted its injections (%s)", reverted["drill_id"], reverted["restored"])

    # -- evidence: when a failure started (MTTD) -------------------------------------------
    def _check(self) -> Any:
        """Run the health checks, noting when they ran (the evidence needs both ends)."""
        started = time.time()
        report = run_health_checks(self.ext)
        self._report = (report, started, time.time())
        return report

    def _record_evidence(self, result: dict[str, Any]) -> None:
        """After the tick has used it: a passing check voids older evidence; a failing one is
        evidence for a later emergency (never for the one it opened, which it detected)."""
        if self._report is None:
            return
        report, started, finished = self._report
        if report.status == "healthy" and not report.failing:
            self.ext.evidence.passed(started, finished)
        elif report.failing:
            self.ext.evidence.record(FAILED_CHECK, started)
        event = result.get("event") if result.get("status") == "activated" else None
        if isinstance(event, dict) and event.get("id"):
            try:  # the event's timeline says which check detected it, and how long it took
                emergency.record_action(self.ext, int(event["id"]), "detected", "ok", {
                    "check_started": utc_from_epoch(started).isoformat() + "Z",
                    "check_finished": utc_from_epoch(finished).isoformat() + "Z",
                    "check_seconds": round(finished - started, 3), "failing": report.failing}, ACTOR)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("flask-notify-emergency: could not record the detection: %s", exc)

    # -- the database down: keep what was detected, write it when the database is back -----
    def _buffer_outage_detection(self, c: Classification | None) -> None:
        """Keep the first detection of this outage, with its real times, in memory."""
        if c is None or self.outage_detection is not None:
            return
        now = utcnow()
        started_at, start_kind = self.ext.evidence.failure_start_time(now)
        self.outage_detection = {"classification": c, "started_at": started_at, "start_kind": start_kind,
                                 "detected_at": now, "ticks": 0}

    def _write_outage_detection(self) -> None:
        """The database answers again: write the event detected while it was down, with the
        times it happened at; a database outage is resolved now that it is back. Raises the
        database's error if it is still down (the tick then treats it as down)."""
        pending = self.outage_detection
        if pending is None:
            return
        ext = self.ext
        with ext.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        back_at = utcnow()
        c: Classification = pending["classification"]
        evidence = dict(c.evidence or {}, recorded_late=True, database_back_at=back_at.isoformat() + "Z",
                        monitor_ticks_while_down=pending["ticks"])
        if pending["start_kind"]:
            evidence["failure_start"] = {"at": pending["started_at"].isoformat() + "Z", "from": pending["start_kind"]}
        event = emergency.open_event(ext, level=c.level, failure_type=c.failure_type, reason=c.reason,
                                     triggered_by=ACTOR, evidence=evidence, affected_users=c.affected_users,
                                     started_at=pending["started_at"], detected_at=pending["detected_at"])
        self.outage_detection = None
        emergency.record_action(ext, event["id"], "recorded-after-outage", "ok",
                                {"detected_at": pending["detected_at"].isoformat() + "Z",
                                 "database_back_at": back_at.isoformat() + "Z"}, ACTOR)
        if c.failure_type == DATABASE_FAILURE:
            resolved = emergency.resolve_event(ext, event["id"], resolved_by=ACTOR, recovered=True, resolved_at=back_at)
            try:
                alert_event(ext, resolved or event, "resolved", note="the database answers again")
            except Exception as exc:
                log.warning("flask-notify-emergency: resolved alert failed: %s", exc)

    def _database_down(self, report: Any, c: Classification | None, exc: BaseException,
                       health: dict[str, Any]) -> dict[str, Any]:
        """Nothing can be recorded; alert directly (deduplicated), keep the detection for
        when the database is back, and try to repair."""
        self.healthy_streak = 0
        self._buffer_outage_detection(c)
        if self.outage_detection is not None:
            self.outage_detection["ticks"] += 1

        outcome = auto_recover(self.ext, ACTOR, "monitor", report=report, classification=c, stop=self._stop)
        return {"status": "database-unreachable", "health": health,
                "classification": c.to_dict() if c else None, "error": outcome.get("error") or
                f"the database is unreachable ({type(exc).__name__}); nothing was recorded",
                "recovery": outcome["status"]}

    def _maybe_rollback(self) -> None:
        """Hand over to the automatic rollback, when the rollback module and config allow it."""
        auto = rollback.maybe_auto_rollback
        try:
            auto(self.ext)
        except Exception:
            log.exception("flask-notify-emergency: automatic rollback check failed")

    def _replay_later(self, event_id: int) -> None:
        def replay() -> None:
            try:
                with self.app.app_context():
                    self.last_replay = replay_backlog(self.ext, actor=ACTOR, source="monitor",
                                                      event_id=event_id, stop=self._stop)
            except Exception as exc:
                self.last_replay = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                log.warning("flask-notify-emergency: backlog replay failed: %s", exc)

        threading.Thread(target=replay, name="notify-emergency-replay", daemon=True).start()

    def _heartbeat(self, result: dict[str, Any]) -> None:
        try:
            self.ext.control.write(HEARTBEAT_KEY, {"at": time.time(), "status": result.get("status"),
                                                   "process": self.ext.state.process_id}, ACTOR)
        except Exception:  # the database may be down; the tick result says so already
            pass


def init_app(app: Any, ext: Any) -> None:
    """Create ``ext.monitor``; start its thread on the first real request, if enabled."""
    monitor = Monitor(app, ext)
    ext.monitor = monitor
    if not app.config["NOTIFY_EMERGENCY_MONITOR_ENABLED"]:
        return
    ext.worker_start.add(monitor.start)

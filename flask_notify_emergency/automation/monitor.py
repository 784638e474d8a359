"""The background monitor: one per cluster, every ``MONITOR_INTERVAL`` seconds it checks,
classifies, opens an emergency and runs its recovery plan, and leaves emergency mode only
after ``HEALTHY_CHECKS_TO_RECOVER`` healthy checks in a row (so a flapping dependency does
not toggle the mode on and off).

Where it runs: every serving worker starts a monitor thread when the app is created
(``START_ON_BOOT``; else on its first real request, see :mod:`.workers`), and
``flask emergency monitor`` runs one as a process of its own. ``flask emergency ...``
commands never start one, nor do synthetic requests made by the CLI's page checks.
``NOTIFY_EMERGENCY_MONITOR_ENABLED = False`` keeps the thread off; the monitor object still
exists as ``ext.monitor`` and :meth:`Monitor.tick` runs one iteration on demand. A paused
``monitor`` service (``stop-services``) makes ticks do nothing.

Election: only the holder of the lock ``monitor`` ticks. The lock expires
``LOCK_TTL_INTERVALS`` intervals after its last renewal: in Redis (``state.acquire_lock``),
or in the database (``control.acquire_lock``) with the memory backend or while Redis is
down; with the database down too, each process falls back to a lock of its own. A keeper
thread renews it (and writes the heartbeat) every quarter interval, even while a long
tick runs; standbys try to take it every quarter interval, so a holder that dies, even by
SIGKILL, is replaced within two intervals. A tick hung for ``HUNG_TICK_INTERVALS``
intervals (at least ``HUNG_TICK_MIN_SECONDS``) stops the renewals, so a hung holder is
replaced too.

Heartbeat: the control key ``monitor_heartbeat`` (database) says when the holder last
beat. :func:`heartbeat_status` reads it for ``status``, the dashboard and ``readyz``; when
no monitor has beaten for ``STALE_INTERVALS`` intervals, :func:`watchdog` (called by
standbys, every CLI command and every dashboard page) says so and sends one alert per
cooldown: a dead man's switch.

Only events the monitor opened are resolved by it (``resolved_by="monitor"``); after
leaving emergency mode it replays the backlog in the background at ``REPLAY_RATE``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

import sqlalchemy as sa

from ..communicate import alert_event, alerts, send_alert
from ..delivery import CLOSED, HALF_OPEN, polling
from ..detect import (FAILED_CHECK, Classification, classify, queue_answers, queue_manager, realtime_probe,
                      run_health_checks, utc_from_epoch)
from ..models import utcnow
from ..respond import cluster_actions, drill_lease, emergency, operator_hold, replay_backlog
from ..rollback import execute as rollback
from .recovery import OVERLOAD, auto_recover

log = logging.getLogger("flask_notify_emergency")

LOCK = "monitor"
ACTOR = "monitor"
#: Control key (database only) with the last tick: services.verify_services reads it.
HEARTBEAT_KEY = "monitor_heartbeat"
#: The lock lapses this many intervals after its holder last renewed it.
LOCK_TTL_INTERVALS = 1.5
#: Renewals, heartbeats and standbys' takeover attempts happen this often (in intervals).
POLL_INTERVALS = 0.25
#: No heartbeat for this many intervals: no monitor is running (the dead man's switch).
STALE_INTERVALS = 3
#: A tick running this long (in intervals, and at least the seconds below) is hung.
HUNG_TICK_INTERVALS = 20
HUNG_TICK_MIN_SECONDS = 300.0
#: Alert ledger key of the dead man's switch.
WATCHDOG_ALERT_KEY = "watchdog:monitor-silent"
#: Control switch set when the dead man's switch alerted; the next monitor tick clears it and
#: sends the all-clear.
WATCHDOG_FIRED_KEY = "watchdog_alerted"
#: The failure type of a database outage (resolved as soon as the database answers again).
DATABASE_FAILURE = "database_persistence"
#: The overload streak written for the poll interval stops growing here (the interval is at
#: its ceiling long before: 2**8 times POLL_INTERVAL).
LOAD_STREAK_MAX = 8
#: While real time fails with the message queue answering, the workers are asked to wake their
#: queue listeners at most once per this many intervals.
WAKE_LISTENERS_INTERVALS = 2
#: Redis key (after the prefix) of a detection made while the database was down.
PENDING_DETECTION_KEY = "monitor:pending-detection"


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
        #: How many times this process has tried for the lock (0: not yet).
        self.elections = 0
        self.lock_ttl = self.interval * LOCK_TTL_INTERVALS
        self.poll = self.interval * POLL_INTERVALS
        #: Called with each tick's result (``flask emergency monitor`` prints them).
        self.tick_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._stop = threading.Event()
        self._tick_lock = threading.Lock()
        self._elect_lock = threading.Lock()
        #: (report, started, finished) of this tick's health check, for the evidence log
        self._report: tuple[Any, float, float] | None = None
        #: what was detected while the database was down, written when it is back
        self.outage_detection: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._tick_started: float | None = None
        #: monitor checks in a row that found the system overloaded (see :meth:`_note_load`)
        self.overload_streak = 0
        #: when the workers may next be asked to wake their queue listeners
        self._next_wake = 0.0

    # -- the thread: lifecycle, lock, heartbeat ----------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start the monitor and keeper threads (once); True if they were started now."""
        if self.running:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="notify-emergency-monitor", daemon=True)
        self._keeper = threading.Thread(target=self._keep, name="notify-emergency-monitor-lock", daemon=True)
        self._thread.start()
        self._keeper.start()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads, interrupting a recovery backoff, and give up the lock."""
        self._stop.set()
        for thread in (self._thread, self._keeper):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        if self.is_leader:
            self._release()
            self.is_leader = False

    def elect(self) -> bool:
        """Take or renew the cluster's monitor lock; True if this process is the monitor."""
        with self._elect_lock:
            self.elections += 1
            try:
                self.is_leader = self._acquire()
            except Exception as exc:  # no store answers: a lock of this process's own
                log.warning("flask-notify-emergency: monitor lock unavailable (%s); using a local one", exc)
                self.is_leader = bool(self.ext.state.acquire_lock(LOCK, self.lock_ttl))
            return self.is_leader

    def _acquire(self) -> bool:
        """Redis holds the lock while it is healthy, else the database, else this process."""
        state = self.ext.state
        if state.backend == "redis" and state.healthy:
            return bool(state.acquire_lock(LOCK, self.lock_ttl))
        try:
            return self.ext.control.acquire_lock(LOCK, state.process_id, self.lock_ttl)
        except sa.exc.SQLAlchemyError:
            return bool(state.acquire_lock(LOCK, self.lock_ttl))

    def _release(self) -> None:
        state = self.ext.state
        for release in (lambda: state.release_lock(LOCK),
                        lambda: self.ext.control.release_lock(LOCK, state.process_id)):
            try:
                release()
            except Exception:  # the lock lapses by itself
                pass

    def _tick_hung(self) -> bool:
        started = self._tick_started
        limit = max(HUNG_TICK_MIN_SECONDS, self.interval * HUNG_TICK_INTERVALS)
        return started is not None and time.monotonic() - started > limit

    def _run(self) -> None:
        """Standby: try for the lock every poll and watch the holder. Holder: tick every interval."""
        self._stop.wait(min(self.poll, 1.0))  # let the app finish creating itself (tables, routes)
        next_tick = 0.0
        while not self._stop.is_set():
            try:
                leader = self.elect()
            except Exception:
                log.exception("flask-notify-emergency: monitor election failed")
                leader = False
            if leader and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.interval
                self._tick_started = time.monotonic()
                try:
                    self.tick()
                except Exception:  # the monitor must outlive any one bad tick
                    log.exception("flask-notify-emergency: monitor tick failed")
                finally:
                    self._tick_started = None
            elif not leader:
                next_tick = 0.0  # on taking over, check at once
                try:
                    with self.app.app_context():
                        watchdog(self.ext, source="monitor standby")
                except Exception:
                    log.debug("flask-notify-emergency: watchdog check failed", exc_info=True)
            wait = self.poll if not leader else max(0.0, min(self.poll, next_tick - time.monotonic()))
            self._stop.wait(wait)

    def _keep(self) -> None:
        """While this process holds the lock: renew it and beat, even during a long tick."""
        while not self._stop.wait(self.poll):
            if not self.is_leader or self._tick_hung():
                continue  # a hung tick lets the lock lapse, so another monitor takes over
            try:
                if self.elect():
                    self._beat()
            except Exception:
                log.debug("flask-notify-emergency: monitor lock renewal failed", exc_info=True)

    # -- one iteration ---------------------------------------------------------------------
    def tick(self) -> dict[str, Any]:
        """Check, classify, act; return what happened (also kept as ``self.last``)."""
        with self._tick_lock, self.app.app_context():
            self._report = None
            result = self._tick()
            result["healthy_streak"] = self.healthy_streak
            result["at"] = time.time()
            self.last = result
            self._record_evidence(result)
            self._beat()
        for listener in list(self.tick_listeners):
            try:
                listener(result)
            except Exception:
                log.exception("flask-notify-emergency: monitor tick listener failed")
        return result

    def _tick(self) -> dict[str, Any]:
        ext = self.ext
        if ext.control.paused().get("monitor"):
            return {"status": "paused"}
        self._revert_abandoned_drill()
        self._all_clear_after_watchdog()
        woke = self._wake_listeners(self.last)  # before the checks: they then see the listeners awake
        report = self._check()
        c = classify(report)
        health = {"status": report.status, "score": report.score, "failing": report.failing}
        health["load"] = self._note_load(c)
        if woke:
            health["woke_listeners"] = woke
        try:
            self._write_outage_detection()
            event = emergency.current_event(ext)
            mode = ext.control.read("mode", "normal") or "normal"
        except sa.exc.SQLAlchemyError as exc:
            return self._database_down(report, c, exc, health)
        evidence: dict[str, Any] | None = None
        if event is not None and event.get("triggered_by") == ACTOR and mode == "emergency":
            c, evidence = self._judge_by_probes(report, c)
            health["evidence"] = evidence
        health["breaker_retest"] = self._retest_breaker(report, (evidence or {}).get("probe"))
        if c is not None:
            self.healthy_streak = 0
            hold = self._held(c.level)
            if hold is not None and (event is None or event.get("triggered_by") != ACTOR or mode != "emergency"):
                # a person just decided (restore, deactivate, fallback): no activation, no rollback
                return {"status": "held", "health": health, "classification": c.to_dict(), "event": event,
                        "hold": hold, "note": operator_hold.describe(hold)}
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
        breaker = self._close_breaker(event["id"])
        self._replay_later(event["id"])
        return {"status": "recovered", "health": health, "event": resolved["event"], "mode": resolved["mode"],
                "breaker": breaker}

    # -- leaving an emergency on evidence ----------------------------------------------------
    def _judge_by_probes(self, report: Any, c: Classification | None) -> tuple[Classification | None, dict[str, Any]]:
        """In emergency mode real time is paused, so rates measured over deliveries (failure
        rate, disconnect ratio, an open breaker) cannot recover: what fails now still counts,
        and the real-time path itself is judged by active probes, the canary (in the realtime
        check) and, where a user is connected, an acknowledged probe notification."""
        current = classify(without_rates(report))
        if current is not None:
            return current, {"judged_by": "checks failing now"}
        probe = realtime_probe.send_probe(self.ext)
        evidence = {"judged_by": "probes", "probe": probe}
        if probe["ran"] and not probe["ok"]:
            reason = (f"the probe notification to connected user {probe['user_id']} was not acknowledged "
                      f"({probe.get('error')})")
            return c or Classification("message_delivery", 2, reason, {"probe": probe}), evidence
        return None, evidence

    def _close_breaker(self, event_id: int) -> dict[str, str] | None:
        """The emergency ended on the probes' evidence that the real-time path delivers: the
        breaker that tripped during it closes too. Left open until ``BREAKER_OPEN_SECONDS``
        ran out, it would be the next tick's finding, and the recovery's own doing would open
        a new emergency. Real traffic trips it again if the path fails again."""
        breaker = self.ext.breaker
        before = breaker.current
        if before == CLOSED:
            return None
        breaker.close()
        detail = {"from": before, "to": CLOSED, "why": "the emergency ended on the probes' evidence"}
        try:
            emergency.record_action(self.ext, event_id, "close-breaker", "ok", detail, ACTOR)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("flask-notify-emergency: could not record the breaker's closing: %s", exc)
        return detail

    def _wake_listeners(self, last: dict[str, Any] | None) -> str | None:
        """The last check found real time down (the canary lost), and the Redis message queue
        answers again: the workers' queue listeners may sleep in python-socketio's reconnect
        back-off (up to 60 s after an outage), and the emergency would outlast its cause by
        that much. Every worker is asked to wake its own (the cluster action
        ``wake-queue-listener``, which replaces only a listener that does not hear the queue),
        at most once per ``WAKE_LISTENERS_INTERVALS``."""
        finding = (last or {}).get("classification") or {}
        event = (last or {}).get("event") or {}
        if (finding.get("failure_type"), finding.get("level")) != ("realtime_connection", 1) \
                or not event.get("id") or time.monotonic() < self._next_wake:
            return None
        manager = queue_manager(self.ext.socketio) if self.ext.socketio is not None else None
        url = getattr(manager, "redis_url", None)
        if manager is None or not isinstance(url, str) or not hasattr(manager, "_redis_connect"):
            return None  # no Redis queue here (Kombu's listener reconnects by itself)
        if not queue_answers(manager):  # the queue itself is down: a woken listener would only back off again
            return None
        self._next_wake = time.monotonic() + WAKE_LISTENERS_INTERVALS * self.interval
        try:
            cluster_actions.request(self.ext, "wake-queue-listener", ACTOR)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("flask-notify-emergency: could not ask the workers to wake their queue listeners: %s", exc)
            return None
        note = "the message queue answers but real time still fails: asked every worker to wake its queue listener"
        emergency.record_action(self.ext, event["id"], "wake-queue-listeners", "ok", {"note": note}, ACTOR)
        return note

    def _retest_breaker(self, report: Any, probe: dict[str, Any] | None) -> dict[str, Any] | None:
        """A half-open breaker is re-tested by the monitor's own probes, not only by traffic:
        an acknowledged probe notification (its acknowledgement counts as a breaker success),
        or, with nobody connected, the canary."""
        breaker = self.ext.breaker
        if breaker.current != HALF_OPEN:
            return None
        if probe is None:
            probe = realtime_probe.send_probe(self.ext)
        if probe["ran"]:
            if not probe["ok"]:
                breaker.record_failure()
            return {"by": "probe notification", "ok": probe["ok"], "breaker": breaker.current}
        realtime = report.checks.get("realtime")
        canary = (realtime.detail.get("canary") or {}) if realtime is not None else {}
        ok = realtime is not None and realtime.ok and bool(canary.get("verified"))
        if ok:
            breaker.record_success()
        else:
            breaker.record_failure()
        return {"by": "canary", "ok": ok, "breaker": breaker.current}

    def _held(self, level: int) -> dict[str, Any] | None:
        """The operator's hold that keeps this tick from acting on a level-``level`` finding."""
        try:
            return operator_hold.holding(self.ext, level)
        except sa.exc.SQLAlchemyError:
            return None

    def _follow(self, event: dict[str, Any], mode: str, c: Classification) -> dict[str, Any] | None:
        """A monitor event that got worse: raise its level, switch emergency mode on if due."""
        if event.get("triggered_by") != ACTOR or c.level >= int(event["level"]):
            return None
        if c.failure_type == OVERLOAD and event.get("failure_type") == OVERLOAD:
            return None  # still overloaded: never a reason for emergency mode
        ext = self.ext
        t = ext.models.EmergencyEvent.__table__
        with ext.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == event["id"]).values(level=c.level))
        detail = {"from_level": event["level"], "to_level": c.level, "failure_type": c.failure_type,
                  "reason": c.reason}
        if mode == "normal" and c.failure_type != OVERLOAD and \
                c.level <= ext.app.config["NOTIFY_EMERGENCY_MONITOR_ACTIVATE_LEVEL"]:
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

    # -- overload: slow the polling clients down ---------------------------------------------
    def _note_load(self, c: Classification | None) -> dict[str, Any]:
        """Count the checks in a row that found overload and tell every worker (the cached
        control key ``load``), which raises the poll interval it hands out by one step per
        check (:mod:`..delivery.polling`). Written only when it changes."""
        findings = [c.to_dict()] + list(c.evidence.get("other_findings") or []) if c is not None else []
        overloaded = any(f.get("failure_type") == OVERLOAD for f in findings)
        streak = min(self.overload_streak + 1, LOAD_STREAK_MAX) if overloaded else 0
        load = {"overloaded": overloaded, "streak": streak}
        try:
            if streak != self.overload_streak or self.ext.state.get(polling.LOAD_KEY) not in (None, load):
                self.ext.control.write(polling.LOAD_KEY, load, ACTOR)
            self.overload_streak = streak
        except sa.exc.SQLAlchemyError as exc:  # the database is down: that finding speaks for itself
            log.debug("flask-notify-emergency: could not record the load: %s", exc)
        return load

    # -- the drills' always-revert guard ----------------------------------------------------
    def _revert_abandoned_drill(self) -> None:
        """A drill whose process died (its lease ran out) is reverted here, before checking."""
        try:
            reverted = drill_lease.revert_if_abandoned(self.ext, ACTOR, undo={"rollback": self._restore_drill})
        except sa.exc.SQLAlchemyError as exc:  # the database is down: the tick reports that
            log.debug("flask-notify-emergency: could not check the drill lease: %s", exc)
            return
        if reverted:
            log.warning("flask-notify-emergency: drill #%s was abandoned by its process; the monitor "
                        "reverted its injections (%s)", reverted["drill_id"], reverted["restored"])

    def _restore_drill(self, drill_id: int) -> str:
        """Undo an abandoned rollback drill: the operator's own ``restore`` (refused, and so
        tried again next tick, while real time's health checks fail)."""
        done = rollback.restore(self.ext, actor=ACTOR, source="monitor", confirm=True, admin=True,
                                reason=f"drill #{drill_id} was abandoned during its rollback")
        return str(done["status"])

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
        announce_pending_detection(self.ext, {"failure_type": c.failure_type, "level": c.level,
                                              "started_at": started_at.isoformat() + "Z",
                                              "detected_at": now.isoformat() + "Z",
                                              "process": self.ext.state.process_id}, self.interval)

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

    def _all_clear_after_watchdog(self) -> None:
        """The dead man's switch alerted while no monitor ran: this one runs, so say so once
        (to the same people, by the same matrix), and clear the switch first so that two
        monitors taking over one after the other do not both send it."""
        ext = self.ext
        try:
            fired = ext.control.read(WATCHDOG_FIRED_KEY, None)
            if not fired:
                return
            ext.control.write(WATCHDOG_FIRED_KEY, None, ACTOR)
            send_alert(ext, "[RESOLVED] A notification monitor is running again",
                       f"The monitor on {socket.gethostname()} (pid {os.getpid()}) checks again. "
                       f"The alert that none was running ({fired.get('at', 'earlier')}, seen by "
                       f"{fired.get('source', 'a watchdog')}) is resolved.", 1, None, kind="watchdog",
                       actor=ACTOR, source="monitor")
        except Exception as exc:  # the database is down: the next tick tries again
            log.warning("flask-notify-emergency: the monitor's all-clear failed: %s", exc)

    def _beat(self) -> None:
        """Write the heartbeat: who monitors, and what its last tick found."""
        last = self.last or {}
        beat = {"at": time.time(), "status": last.get("status", "starting"), "tick_at": last.get("at"),
                "process": self.ext.state.process_id, "host": socket.gethostname(), "pid": os.getpid(),
                "interval": self.interval}
        try:
            self.ext.control.write(HEARTBEAT_KEY, beat, ACTOR)
        except Exception:  # the database may be down; the tick result says so already
            pass


# -- a detection that cannot be written yet, for those who wait for it (drills) -------------
def _pending_key(ext: Any) -> str:
    return f"{ext.state.prefix}:{PENDING_DETECTION_KEY}"


def announce_pending_detection(ext: Any, detection: dict[str, Any], interval: float) -> None:
    """Say in Redis (Redis backend) what the monitor detected while the database is down; the
    event itself is written when the database is back. Never raises."""
    if getattr(ext.state, "backend", "memory") != "redis":
        return
    try:
        import redis

        client = redis.Redis.from_url(ext.state.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            client.set(_pending_key(ext), json.dumps(detection), ex=max(60, int(10 * interval)))
        finally:
            client.close()
    except Exception as exc:  # Redis down too: the event still comes when the database is back
        log.debug("flask-notify-emergency: could not announce the pending detection: %s", exc)


def pending_detection(ext: Any) -> dict[str, Any] | None:
    """The monitor's latest detection still waiting for the database (Redis backend), or None."""
    if getattr(ext.state, "backend", "memory") != "redis":
        return None
    import redis

    client = redis.Redis.from_url(ext.state.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        raw = client.get(_pending_key(ext))
    finally:
        client.close()
    return json.loads(raw) if raw else None


def without_rates(report: Any) -> dict[str, Any]:
    """``report`` as a dict without the findings measured over past deliveries (failure
    rate, disconnect ratio, breaker state): what is failing right now."""
    data = report.to_dict()
    checks = {name: dict(check) for name, check in data["checks"].items()}
    realtime = checks.get("realtime")
    if realtime is not None:
        detail = {k: v for k, v in (realtime.get("detail") or {}).items()
                  if k not in ("delivery", "disconnect_ratio", "breaker")}
        realtime["detail"] = detail
        if realtime.get("status") == "degraded":
            realtime["status"] = "ok"
    return dict(data, checks=checks)


# -- the heartbeat as others see it, and the dead man's switch ------------------------------
def heartbeat_status(ext: Any) -> dict[str, Any]:
    """The cluster's monitor as its heartbeat shows it.

    ``state``: ``fresh``, ``stale`` (no beat for ``STALE_INTERVALS`` intervals) or ``never``
    (no monitor has ever beaten on this database). Raises the database's error if it is down.
    """
    interval = float(ext.app.config["NOTIFY_EMERGENCY_MONITOR_INTERVAL"])
    beat = ext.control.read(HEARTBEAT_KEY)
    if not isinstance(beat, dict) or not isinstance(beat.get("at"), (int, float)):
        return {"state": "never", "age_seconds": None, "limit_seconds": STALE_INTERVALS * interval,
                "detail": "no monitor has run yet: start the app's workers or 'flask emergency monitor'"}
    interval = max(interval, float(beat.get("interval") or 0))
    limit = STALE_INTERVALS * interval
    age = max(0.0, time.time() - float(beat["at"]))
    stale = age > limit
    where = f"{beat.get('host', '?')} pid {beat.get('pid', '?')}"
    detail = (f"no monitor has checked for {age:.0f}s (more than {STALE_INTERVALS} intervals of {interval:g}s; "
              f"last: {where}): start 'flask emergency monitor' or the app's workers, and check their logs"
              if stale else f"last beat {age:.1f}s ago from {where}")
    return {"state": "stale" if stale else "fresh", "age_seconds": round(age, 3), "limit_seconds": limit,
            "process": beat.get("process"), "host": beat.get("host"), "pid": beat.get("pid"),
            "last_status": beat.get("status"), "detail": detail}


def watchdog(ext: Any, source: str = "watchdog") -> dict[str, Any] | None:
    """The dead man's switch: if no monitor has beaten for ``STALE_INTERVALS`` intervals,
    send one alert (per ``ALERT_COOLDOWN``) and return the stale status; else None."""
    try:
        status = heartbeat_status(ext)
    except Exception:  # the database is down: other checks say so
        return None
    if status["state"] != "stale":
        return None
    try:
        send, _ = alerts.ledger.claim(ext, [WATCHDOG_ALERT_KEY], None, lambda _id: True)
        if send:
            ext.control.write(WATCHDOG_FIRED_KEY, {"at": utcnow().isoformat(timespec="seconds") + "Z",
                                                   "source": source}, ACTOR)
            status["alert"] = send_alert(
                ext, "[EMERGENCY] No notification monitor is running",
                f"{status['detail']}.\nNothing detects or recovers real-time failures until a monitor "
                f"runs again. Seen by: {source}.", 1, None, kind="watchdog", actor=ACTOR, source=source)
    except Exception as exc:
        log.warning("flask-notify-emergency: watchdog alert failed: %s", exc)
    return status


def init_app(app: Any, ext: Any) -> None:
    """Create ``ext.monitor``; start its threads with the worker (at boot or first request), if enabled."""
    monitor = Monitor(app, ext)
    ext.monitor = monitor
    if not app.config["NOTIFY_EMERGENCY_MONITOR_ENABLED"]:
        return
    ext.worker_start.add(monitor.start)

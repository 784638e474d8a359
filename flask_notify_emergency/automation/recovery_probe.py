"""``test-recovery``: exercise each mechanism recovery relies on, without disturbing users.

Every probe either reads, or makes a change nobody notices (a scratch switch, a banner
cache invalidation, a test notification to the test user), and reports pass, fail or skip
with the reason. Nothing here pauses delivery, trips the breaker or touches real users'
notifications.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from typing import Any, Callable, TypedDict

from ..detect import run_health_checks
from ..respond import FallbackTestError, run_fallback_test, verify_services
from . import recovery

#: A probe returns (True pass / False fail / None skip, detail).
Outcome = tuple[bool | None, str]
SCRATCH_KEY = "recovery_probe"


class ProbeResult(TypedDict):
    """One probe's line in the ``test-recovery`` report."""

    name: str
    ok: bool | None
    detail: str


def probe_database(ext: Any, actor: str) -> Outcome:
    """The database (the truth) takes a switch write and gives it back."""
    token = uuid.uuid4().hex
    start = time.perf_counter()
    ext.control.write(SCRATCH_KEY, token, actor)
    back = ext.control.read(SCRATCH_KEY)
    ms = (time.perf_counter() - start) * 1000
    return back == token, f"switch write and read back in {ms:.1f} ms" if back == token else "read back a different value"


def probe_shared_state(ext: Any, actor: str) -> Outcome:
    """The shared state answers, and a Redis backend can reconnect (a recovery action)."""
    state = ext.state
    if state.backend != "redis":
        return True, "memory backend: each worker re-reads the database every few seconds"
    try:
        ms = state.ping() * 1000
    except Exception as exc:
        return False, f"Redis does not answer: {type(exc).__name__}: {exc}"
    if not state.reconnect():
        return False, "Redis answered a ping but the reconnect failed"
    return True, f"Redis ping {ms:.1f} ms; reconnect ok"


def probe_propagation(ext: Any, actor: str) -> Outcome:
    """A switch change is published to every worker (banner cache invalidation: harmless)."""
    state = ext.state
    if state.backend != "redis":
        ext.banners_changed(actor)
        return True, "memory backend: workers pick changes up from the database"
    import redis

    client = redis.Redis.from_url(state.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(state.channel)
        deadline = time.monotonic() + 2.0
        while not pubsub.subscribed and time.monotonic() < deadline:
            pubsub.get_message(timeout=0.05)
        start = time.perf_counter()
        ext.banners_changed(actor)
        while time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=0.1)
            if msg and msg.get("type") == "message":
                data = json.loads(msg["data"])
                if data.get("t") == "set" and data.get("k") == "banners_version":
                    return True, f"change published to every worker in {(time.perf_counter() - start) * 1000:.1f} ms"
        return False, f"no change message on channel {state.channel!r} within 2 s"
    finally:
        pubsub.close()
        client.close()


def probe_breaker(ext: Any, actor: str) -> Outcome:
    """The breaker state every worker sees matches the stored one."""
    cached = ext.breaker.snapshot()
    stored = ext.control.read("breaker")
    current = ext.breaker.current
    if stored is not None and stored.get("state") != cached.get("state"):
        return False, f"stored breaker {stored.get('state')} but this worker sees {cached.get('state')}"
    return True, f"breaker {current}" + ("" if stored is not None else " (never tripped)")


def probe_health(ext: Any, actor: str) -> Outcome:
    """The health checks run and report (the canary included)."""
    report = run_health_checks(ext).to_dict()
    failing = sorted(name for name, c in report["checks"].items() if not c["ok"])
    return True, f"{len(report['checks'])} checks ran: {report['status']}" + (
        f" (failing: {', '.join(failing)})" if failing else "")


def probe_recovery_actions(ext: Any, actor: str) -> Outcome:
    """Every recovery action the runbook names is available."""
    names = ("auto_recover", "restart_websockets", "clear_queues", "clear_sessions",
             "run_service_command", "half_open_breaker", "replay_backlog")
    missing = [n for n in names if not callable(getattr(recovery, n, None))]
    return not missing, f"missing: {', '.join(missing)}" if missing else f"{len(names)} actions available"


def probe_operator_commands(ext: Any, actor: str) -> Outcome:
    """Each configured operator command's program exists (nothing is run)."""
    commands = ext.app.config.get("NOTIFY_EMERGENCY_SERVICE_COMMANDS") or {}
    if not commands:
        return None, "no NOTIFY_EMERGENCY_SERVICE_COMMANDS configured"
    missing = [name for name, argv in commands.items()
               if not argv or not (shutil.which(argv[0]) or os.access(argv[0], os.X_OK))]
    if missing:
        return False, f"program not found for: {', '.join(sorted(missing))}"
    return True, f"{len(commands)} command(s) found: {', '.join(sorted(commands))}"


def probe_services(ext: Any, actor: str) -> Outcome:
    """The services are in the state their profile wants."""
    result = verify_services(ext, actor)
    bad = [f"{n} {s['state']}" for n, s in result["services"].items() if not s["ok"]]
    bad += [f"command {c['name']}" for c in result["commands"] if not c["ok"]]
    return not bad, ", ".join(bad) if bad else f"all as profile '{result['profile']}' wants"


def probe_fallback(ext: Any, actor: str, user_id: str | None, source: str) -> Outcome:
    """A test notification to the test user arrives by flash exactly once."""
    if not user_id:
        return None, "no test user: pass --user or set NOTIFY_EMERGENCY_TEST_USER_ID"

    try:
        result = run_fallback_test(ext, user_id, actor, source)
    except (FallbackTestError, ValueError) as exc:
        return False, str(exc)
    failed = [s["step"] for s in result["steps"] if not s["ok"]]
    return result["ok"], (f"failed steps: {', '.join(failed)}" if failed
                          else f"notification #{result['notification_id']} flashed exactly once")


PROBES: tuple[tuple[str, Callable[[Any, str], Outcome]], ...] = (
    ("database", probe_database),
    ("shared-state", probe_shared_state),
    ("propagation", probe_propagation),
    ("breaker", probe_breaker),
    ("health-checks", probe_health),
    ("recovery-actions", probe_recovery_actions),
    ("operator-commands", probe_operator_commands),
    ("services", probe_services),
)


def run_recovery_probes(ext: Any, actor: str, source: str = "cli", user_id: str | None = None) -> dict[str, Any]:
    """Run every probe; ``ok`` is False if any failed (skips do not fail)."""
    results: list[ProbeResult] = []
    for name, probe in PROBES:
        try:
            ok, detail = probe(ext, actor)
        except Exception as exc:  # a probe that crashes is a failed probe, and the rest still run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results.append({"name": name, "ok": ok, "detail": detail})
    uid = user_id or ext.app.config.get("NOTIFY_EMERGENCY_TEST_USER_ID")
    try:
        ok, detail = probe_fallback(ext, actor, uid, source)
    except Exception as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    results.append({"name": "fallback", "ok": ok, "detail": detail})
    failed = sum(1 for r in results if r["ok"] is False)
    skipped = sum(1 for r in results if r["ok"] is None)
    outcome = {"ok": failed == 0, "probes": results, "passed": len(results) - failed - skipped,
               "failed": failed, "skipped": skipped}
    ext.audit.record(actor, "test-recovery", source, {"user_id": uid}, outcome="ok" if failed == 0 else "failed",
                     detail=", ".join(r["name"] for r in results if r["ok"] is False) or None)
    return outcome

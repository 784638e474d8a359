"""Recovery commands: ``auto-recover``, ``restart-websockets``, ``clear-queues``,
``clear-sessions``, ``stop-services``, ``start-services``, ``restart-services``,
``verify-services`` and ``test-recovery``.

The recovery actions live in :mod:`..recovery`, the services in :mod:`..services`; these
commands only call them with the operator as actor and print what happened.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from ..automation import recovery, run_recovery_probes
from ..respond import RecoveryError, cluster_actions, services
from . import emergency_group
from .output import SOURCE, actor, done, ext_state, fail, json_option, mark, report, with_errors


def succeeded(result: Any) -> bool:
    """A recovery action's verdict: its ``ok`` (or ``recovered``) field."""
    if not isinstance(result, dict):
        return bool(result)
    for key in ("ok", "recovered", "success"):
        if key in result:
            return bool(result[key])
    return True


#: Keys of a cluster action's result that :func:`_worker_lines` prints.
CLUSTER_KEYS = ("workers", "workers_detail", "failed_workers", "workers_error")


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_value(v) for v in value) or "none"
    return str(value)


def result_lines(title: str, result: Any) -> list[str]:
    """A recovery action's result dict as readable lines (steps listed one per line)."""
    out = [f"{title}: {'done' if succeeded(result) else 'FAILED'}"]
    if not isinstance(result, dict):
        return out
    for key, value in result.items():
        if key in ("ok", "recovered", "success", "action", *CLUSTER_KEYS) or value is None:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(f"  {key}:")
            for item in value:
                name = item.get("name") or item.get("step") or item.get("action") or ""
                ok = item.get("ok")
                rest = {k: v for k, v in item.items() if k not in ("name", "step", "action", "ok")}
                out.append(f"    {mark(ok) if ok is not None else '    '} {name} {_value(rest)}".rstrip())
        else:
            out.append(f"  {key}: {_value(value)}")
    return out


def _run_action(title: str, call: Callable[[Any], Any], as_json: bool) -> None:
    ext = ext_state()
    try:
        result = call(ext)
    except Exception as exc:
        if isinstance(exc, RecoveryError):
            fail(str(exc), as_json=as_json)
        raise
    data = result if isinstance(result, dict) else {"ok": bool(result)}
    report(data, as_json, lambda: result_lines(title, data) + _worker_lines(data))
    done(succeeded(data))


#: What to do when a worker failed a cluster action, by action.
WORKER_FIX = {
    "restart-websockets": "check that this worker reaches its Socket.IO message queue (SOCKETIO_MESSAGE_QUEUE) "
                          "and its log, then run 'restart-websockets' again",
    "clear-sessions": "check this worker's log, then run 'clear-sessions' again",
    "clear-problematic-sessions": "check this worker's log, then run 'clear-sessions --problematic-only' again",
}


def _with_cluster_request(ext: Any, action: str, result: Any, timeout: float) -> Any:
    """This process has done its part; ask every serving worker to do the same on itself and
    wait for their answers. Fails (``ok`` false) if any worker failed or did not answer."""
    data = dict(result) if isinstance(result, dict) else {"ok": bool(result)}
    value = cluster_actions.request(ext, action, actor())
    data["cluster_request"] = value
    cluster = cluster_actions.wait_for_results(ext, value, timeout)
    data["workers"] = cluster["workers"]
    data["workers_detail"] = cluster["detail"]
    here_ok = succeeded(data)
    data["ok"] = here_ok and cluster["ok"]
    data.pop("recovered", None)
    data.pop("success", None)
    if not cluster["ok"]:
        failed = [w for w in cluster["workers"] if not w["ok"]]
        data["failed_workers"] = [w["process_id"] for w in failed]
        data["workers_error"] = "; ".join(
            f"worker {w['process_id']} on {w.get('host')} (pid {w.get('pid')}): {w.get('error') or w.get('outcome')}"
            for w in failed) or cluster["detail"]
    return data


def _worker_lines(data: dict[str, Any]) -> list[str]:
    """One line per serving worker of a cluster action (a failed one says what to do)."""
    if "workers" not in data:
        return []
    action = (data.get("cluster_request") or {}).get("action", "")
    out = [f"Serving workers: {data.get('workers_detail', '')}"]
    for w in data["workers"]:
        where = f"worker {w['process_id']} on {w.get('host')} (pid {w.get('pid')})"
        if w["ok"]:
            out.append(f"  {mark(True)} {where}: {w.get('outcome') or 'ok'}")
        else:
            out.append(f"  {mark(False)} {where}: {w.get('error') or w.get('outcome')}; "
                       + WORKER_FIX.get(action, "check its log"))
    return out


def timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--timeout``: how long a cluster action waits for every serving worker's answer."""
    return click.option("--timeout", type=click.FloatRange(min=0.5), default=15.0, show_default=True,
                        help="Seconds to wait for every serving worker's result.")(func)


def _auto_recover_lines(result: dict[str, Any]) -> list[str]:
    health = result.get("health") or {}
    out = [f"Automatic recovery: {result['status']}"
           + (f" (health {health.get('status')}, score {health.get('score')}"
              + (f", failing: {', '.join(health['failing'])}" if health.get("failing") else "") + ")"
              if health else "")]
    c = result.get("classification")
    if c:
        out.append(f"  classified: {c.get('failure_type')}, level {c.get('level')}: {c.get('reason')}")
    event = result.get("event")
    if event:
        out.append(f"  event #{event['id']} ({event['status']}, level {event['level']} {event['level_name']})"
                   + (" opened now" if result.get("opened") else ""))
    for action in result.get("actions", []):
        out.append(f"    {mark(action.get('ok'))} attempt {action.get('attempt', 1)}: {action.get('action')} "
                   f"{action.get('outcome')}" + (f" ({action['error']})" if action.get("error") else ""))
    if result.get("escalation"):
        out.append(f"  escalated: {_value(result['escalation'])}")
    if result.get("error"):
        out.append(f"  {result['error']}")
    return out


@emergency_group.command("auto-recover")
@json_option
@with_errors
def auto_recover_command(as_json: bool) -> None:
    """Check, classify the failure and run its recovery plan (retries, then escalation)."""
    result = recovery.auto_recover(ext_state(), actor(), SOURCE)
    report(result, as_json, lambda: _auto_recover_lines(result))
    done(succeeded(result))


@emergency_group.command("restart-websockets")
@timeout_option
@json_option
@with_errors
def restart_websockets_command(timeout: float, as_json: bool) -> None:
    """Reconnect the real-time layer (shared state, Socket.IO queue) here and in every serving
    worker, and re-probe it; exit 1 naming each worker that failed or did not answer."""
    _run_action("Restart WebSockets", lambda ext: _with_cluster_request(
        ext, "restart-websockets", recovery.restart_websockets(ext, actor(), SOURCE), timeout), as_json)


@emergency_group.command("clear-queues")
@json_option
@with_errors
def clear_queues_command(as_json: bool) -> None:
    """Hand stuck real-time deliveries to the fallbacks, delete expired rows (after a backup)."""
    _run_action("Clear queues", lambda ext: recovery.clear_queues(ext, actor(), SOURCE), as_json)


@emergency_group.command("clear-sessions")
@click.option("--problematic-only", is_flag=True,
              help="Only broken entries (sockets of deleted users, stale registry entries).")
@timeout_option
@json_option
@with_errors
def clear_sessions_command(problematic_only: bool, timeout: float, as_json: bool) -> None:
    """Clear real-time session state (all of it, or only the problematic entries) here and in
    every serving worker; exit 1 naming each worker that failed or did not answer."""
    action = "clear-problematic-sessions" if problematic_only else "clear-sessions"
    _run_action("Clear sessions", lambda ext: _with_cluster_request(
        ext, action, recovery.clear_sessions(ext, actor(), problematic_only, SOURCE), timeout), as_json)


def _services_lines(result: dict[str, Any]) -> list[str]:
    verb = {"stop": "Stopped", "start": "Started", "restart": "Restarted", "verify": "Verified"}[result["action"]]
    out = [f"{verb} services in every worker" + (f" (profile {result['profile']})" if result.get("profile") else "")
           + ("" if result["ok"] else ": FAILED")]
    for name, info in result["services"].items():
        if result["action"] == "verify":
            out.append(f"  {mark(info['ok'])} {name:<9} {info['state']:<8} {info['detail']}")
        else:
            after = "paused" if info["after"] else "running"
            out.append(f"  {name:<9} {'paused' if info['before'] else 'running'} -> {after}")
    for cmd in result["commands"]:
        out.append(f"  {mark(cmd['ok'])} operator command {cmd['name']}"
                   + (f": {cmd.get('error') or cmd.get('detail')}" if (cmd.get("error") or cmd.get("detail")) else ""))
    if result["action"] == "stop":
        out.append("Real-time delivery is paused: notifications go to flash and polling until 'start-services'.")
    return out


@emergency_group.command("stop-services")
@json_option
@with_errors
def stop_services_command(as_json: bool) -> None:
    """Pause real-time delivery, the monitor and replay in every worker (+ operator stop commands)."""
    result = services.stop_services(ext_state(), actor(), SOURCE)
    report(result, as_json, lambda: _services_lines(result))
    done(result["ok"])


@emergency_group.command("start-services")
@click.option("--emergency-mode", is_flag=True,
              help="Keep real-time delivery paused (fallbacks only); run the monitor and replay.")
@json_option
@with_errors
def start_services_command(emergency_mode: bool, as_json: bool) -> None:
    """Resume the services in every worker (+ operator start commands)."""
    result = services.start_services(ext_state(), actor(), emergency_mode, SOURCE)
    report(result, as_json, lambda: _services_lines(result))
    done(result["ok"])


@emergency_group.command("restart-services")
@json_option
@with_errors
def restart_services_command(as_json: bool) -> None:
    """Stop then start the services in every worker (+ operator restart commands)."""
    result = services.restart_services(ext_state(), actor(), SOURCE)
    report(result, as_json, lambda: _services_lines(result))
    done(result["ok"])


@emergency_group.command("verify-services")
@json_option
@with_errors
def verify_services_command(as_json: bool) -> None:
    """Check each service is in the state its profile wants; exit 1 if not."""
    result = services.verify_services(ext_state(), actor())
    report(result, as_json, lambda: _services_lines(result))
    done(result["ok"])


@emergency_group.command("test-recovery")
@click.option("--user", "user_id", help="Test user for the fallback round trip (default: NOTIFY_EMERGENCY_TEST_USER_ID).")
@json_option
@with_errors
def test_recovery_command(user_id: str | None, as_json: bool) -> None:
    """Exercise each recovery mechanism without disturbing users; report pass/fail."""
    ext = ext_state()
    result = run_recovery_probes(ext, actor(), SOURCE, user_id)

    def lines() -> list[str]:
        out = ["Recovery self-test:"]
        out += [f"  {mark(p['ok'])} {p['name']:<18} {p['detail']}" for p in result["probes"]]
        out.append(f"{result['passed']} passed, {result['failed']} failed, {result['skipped']} skipped")
        return out

    report(result, as_json, lines)
    done(result["ok"])

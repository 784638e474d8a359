"""Detection commands: ``status``, ``health-check``, ``check-websockets``, ``diagnostics``.

They read the cluster's state from the database (the truth) and the shared state, so they
show what every worker does, not what this one process would do.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from typing import Any

import click
import sqlalchemy as sa

from ..communicate import dashboard_status
from ..config import redact_url, redacted
from ..detect import health
from ..models import utcnow
from ..respond import current_event, paused_now, profile, worker_reports
from . import emergency_group
from .command import DATABASE_DOWN, database_down_message
from .output import EXIT_DEGRADED, EXIT_FAILED, EXIT_OK, done, ext_state, fail, json_option, mark, report

#: The checks ``run_health_checks`` knows, for ``--only``.
CHECK_NAMES = ("realtime", "redis", "database", "sessions", "resources")


def delivery_route(mode: str, paused: dict[str, bool], breaker: str, has_notifier: bool) -> str:
    """In words: where a notification sent now goes first."""
    if mode != "normal":
        return f"fallbacks (flash and polling): delivery mode is '{mode}'"
    if not has_notifier:
        return "fallbacks (flash and polling): no real-time notifier is configured"
    if paused.get("realtime"):
        return "fallbacks (flash and polling): real-time delivery is paused"
    if breaker == "open":
        return "fallbacks (flash and polling): the circuit breaker is open"
    return "real-time (Socket.IO, acknowledged), fallbacks when unacknowledged"


def collect_status(ext: Any) -> dict[str, Any]:
    """The cluster's delivery state as JSON-ready data."""
    mode = ext.control.read("mode", "normal") or "normal"
    paused = paused_now(ext)
    snap = ext.breaker.snapshot()
    breaker = ext.breaker.current
    count, oldest = ext.store.backlog()
    banners = ext.store.active_banners()
    fallbacks = ext.control.read("fallbacks", {}) or {}
    return {
        "mode": mode,
        "delivery": delivery_route(mode, paused, breaker, ext.notifier is not None),
        "breaker": {"state": breaker,
                    "opened_at": (dt.datetime.fromtimestamp(snap["opened_at"], dt.timezone.utc)
                                  .replace(tzinfo=None).isoformat() + "Z") if snap.get("opened_at") else None},
        "event": current_event(ext),
        "dashboard_status": dashboard_status(ext),
        "paused": paused,
        "services_profile": profile(ext),
        "fallbacks": {"flash_forced": paused["realtime"],
                      "emergency_banners": [b["id"] for b in banners if b["kind"] == "emergency"],
                      "enabled": fallbacks},
        "backlog": {"undelivered": count,
                    "oldest_age_seconds": round((utcnow() - oldest).total_seconds(), 1) if oldest else None},
        "banners": len(banners),
        "connected_users": ext.state.connected_users(),
        "shared_state": {"backend": ext.state.backend, "healthy": bool(ext.state.healthy)},
    }


def _status_lines(data: dict[str, Any]) -> list[str]:
    event = data["event"]
    lines = [
        f"Delivery mode:   {data['mode']}",
        f"Routing:         {data['delivery']}",
        f"Circuit breaker: {data['breaker']['state']}"
        + (f" (opened {data['breaker']['opened_at']})" if data["breaker"]["opened_at"] else ""),
    ]
    if event:
        lines.append(f"Open emergency:  #{event['id']} level {event['level']} ({event['level_name']}), "
                     f"{event['failure_type']}: {event['reason']} (by {event['triggered_by']}, "
                     f"since {event['started_at']})")
    else:
        lines.append("Open emergency:  none")
    team = data["dashboard_status"]
    lines.append(f"Team status:     {team['status']}: {team['message']} (by {team['updated_by']}, "
                 f"{team['updated_at']})" if team else "Team status:     not set (see 'update-dashboard')")
    paused = [name for name, p in data["paused"].items() if p]
    lines.append(f"Paused services: {', '.join(paused) if paused else 'none'}"
                 + (" (started with --emergency-mode)" if data["services_profile"] == "emergency" else ""))
    age = data["backlog"]["oldest_age_seconds"]
    lines.append(f"Backlog:         {data['backlog']['undelivered']} undelivered"
                 + (f", oldest {age:.0f}s old" if age is not None else ""))
    lines.append(f"Banners:         {data['banners']} active"
                 + (f" (emergency broadcast #{', #'.join(map(str, data['fallbacks']['emergency_banners']))})"
                    if data["fallbacks"]["emergency_banners"] else ""))
    lines.append(f"Connected users: {data['connected_users']}")
    state = data["shared_state"]
    lines.append(f"Shared state:    {state['backend']} ({'healthy' if state['healthy'] else 'UNREACHABLE'})")
    return lines


def collect_status_without_database(ext: Any, problem: str) -> dict[str, Any]:
    """What can be known while the database is down: whether Redis answers, the serving
    workers' own reports (Redis backend) and so the mode they act on, and connected users."""
    state = ext.state
    data: dict[str, Any] = {"ok": False, "error": problem, "database": "unreachable",
                            "shared_state": {"backend": state.backend, "healthy": bool(state.healthy)},
                            "mode": None, "workers": None, "connected_users": None}
    if state.backend != "redis":
        return data
    try:
        state.reconnect()
        data["shared_state"]["healthy"] = bool(state.healthy)
        workers = worker_reports(ext)
    except Exception as exc:  # Redis is down too
        data["shared_state"] = {"backend": state.backend, "healthy": False, "error": f"{type(exc).__name__}: {exc}"}
        return data
    data["workers"] = workers
    modes = sorted({str(w.get("mode")) for w in workers})
    data["mode"] = modes[0] if len(modes) == 1 else (", ".join(modes) if modes else None)
    data["connected_users"] = state.connected_users()
    return data


def _status_without_database_lines(data: dict[str, Any]) -> list[str]:
    state = data["shared_state"]
    lines = ["Database:        UNREACHABLE (below: what the shared state tells)"]
    if not state["healthy"]:
        lines.append(f"Shared state:    {state['backend']} "
                     + ("(UNREACHABLE): nothing more can be read" if state["backend"] == "redis"
                        else "(memory backend: the mode lives only in the database)"))
        return lines
    workers = data["workers"] or []
    lines.append(f"Delivery mode:   {data['mode'] or 'unknown (no worker reports)'} (as the workers report it)")
    lines.append(f"Connected users: {data['connected_users']}")
    lines.append(f"Shared state:    {state['backend']} (healthy)")
    lines.append(f"Workers:         {len(workers)} reporting")
    lines += [f"  {w.get('process_id')} on {w.get('host')}: mode {w.get('mode')}, "
              f"paused {', '.join(k for k, v in (w.get('paused') or {}).items() if v) or 'none'}, "
              f"reported {w.get('age_seconds')}s ago" for w in workers]
    return lines


@emergency_group.command("status")
@json_option
def status_command(as_json: bool) -> None:
    """Show the delivery mode, breaker, open emergency, team status, paused services and backlog."""
    ext = ext_state()
    down = click.get_current_context().meta.get(DATABASE_DOWN)
    if down is None:
        try:
            data = collect_status(ext)
        except sa.exc.SQLAlchemyError as exc:
            down = database_down_message(ext.engine, exc)
    if down is not None:
        partial = collect_status_without_database(ext, down)
        if as_json:
            fail(down, data=partial, as_json=True)
        report(partial, False, lambda: _status_without_database_lines(partial))
        fail(down)
    report(data, as_json, lambda: _status_lines(data))


def _compact(value: Any) -> str:
    """A check's detail on one line: ``key=value`` pairs, nested ones in braces."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v) if not isinstance(v, dict) else '{' + _compact(v) + '}'}"
                         for k, v in value.items() if v is not None)
    return str(value)


def _check_line(name: str, check: dict[str, Any]) -> str:
    latency = check.get("latency_ms")
    text = f"  {mark(check['ok'])} {name:<10} {check.get('status', ''):<9}"
    text += f" {latency:>8.1f} ms" if isinstance(latency, (int, float)) else f" {'-':>8}   "
    if check.get("detail"):
        text += f"  {_compact(check['detail'])}"
    if check.get("error"):
        text += f"  [{check.get('error_type') or 'error'}: {check['error']}]"
    return text


def run_checks(ext: Any, only: list[str] | None) -> dict[str, Any]:
    """``run_health_checks`` as a dict (``status``, ``score``, ``checks``...)."""
    return dict(health.run_health_checks(ext, only=only or None).to_dict())


@emergency_group.command("health-check")
@click.option("--only", "only", multiple=True, type=click.Choice(CHECK_NAMES),
              help="Run only this check (repeatable).")
@json_option
def health_check_command(only: tuple[str, ...], as_json: bool) -> None:
    """Run the health checks; exit 0 healthy, 1 critical, 3 degraded."""
    ext = ext_state()
    data = run_checks(ext, list(only))

    def lines() -> list[str]:
        out = [f"Health: {data['status']} (score {data['score']}) at {data.get('checked_at')}"]
        out += [_check_line(name, check) for name, check in data["checks"].items()]
        return out

    report(data, as_json, lines)
    status = str(data["status"])
    if status == "critical":
        raise click.exceptions.Exit(EXIT_FAILED)
    if status != "healthy":
        raise click.exceptions.Exit(EXIT_DEGRADED)
    raise click.exceptions.Exit(EXIT_OK)


def _socketio_info(ext: Any) -> dict[str, Any]:
    sio = ext.socketio
    if sio is None:
        return {"configured": False, "message_queue": None, "client_manager": None}
    queue = getattr(sio, "server_options", {}).get("message_queue")
    manager = getattr(getattr(sio, "server", None), "manager", None)
    return {"configured": True, "message_queue": redact_url(queue) if isinstance(queue, str) else queue,
            "client_manager": type(manager).__name__ if manager is not None else None}


@emergency_group.command("check-websockets")
@json_option
def check_websockets_command(as_json: bool) -> None:
    """Connected users, the namespace, and the end-to-end canary; exit 1 if the canary fails."""
    ext = ext_state()
    canary = run_checks(ext, ["realtime"])["checks"].get("realtime")
    paused = paused_now(ext)
    data = {
        "namespace": ext.namespace,
        "connected_users": ext.state.connected_users(),
        "socketio": _socketio_info(ext),
        "realtime_paused": paused["realtime"],
        "mode": ext.control.read("mode", "normal") or "normal",
        "breaker": ext.breaker.current,
        "canary": canary,
        "ok": bool(canary and canary["ok"]),
    }

    def lines() -> list[str]:
        sio = data["socketio"]
        out = [f"Namespace:       {data['namespace']}",
               f"Connected users: {data['connected_users']}",
               f"Socket.IO:       {'configured' if sio['configured'] else 'NOT configured'}"
               + (f", message queue {sio['message_queue']}" if sio["message_queue"] else ", no message queue")
               + (f" ({sio['client_manager']})" if sio["client_manager"] else ""),
               f"Real-time:       {'PAUSED' if data['realtime_paused'] else 'running'}, "
               f"mode {data['mode']}, breaker {data['breaker']}"]
        out.append("Canary:" if canary else "Canary:          not run")
        if canary:
            out.append(_check_line("realtime", canary))
        return out

    report(data, as_json, lines)
    done(data["ok"])


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    names = ("flask-notify-emergency", "Flask", "Flask-SocketIO", "python-socketio", "python-engineio",
             "Flask-SQLAlchemy", "SQLAlchemy", "Flask-Login", "redis", "Werkzeug", "blinker")
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _counts(ext: Any) -> dict[str, Any]:
    m = ext.models
    n, e, a = m.Notification.__table__, m.EmergencyEvent.__table__, m.AuditEntry.__table__
    with ext.engine.connect() as conn:
        total, undelivered = conn.execute(sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((n.c.delivered == sa.false(), 1), else_=0)), 0))).one()
        channels = {str(ch): int(c) for ch, c in conn.execute(
            sa.select(n.c.channel, sa.func.count()).where(n.c.delivered == sa.true()).group_by(n.c.channel))}
        events = {str(st): int(c) for st, c in conn.execute(
            sa.select(e.c.status, sa.func.count()).group_by(e.c.status))}
        audit = conn.execute(sa.select(sa.func.count()).select_from(a)).scalar_one()
    return {"notifications": int(total), "undelivered": int(undelivered), "delivered_by_channel": channels,
            "events": events, "audit_entries": int(audit), "active_banners": len(ext.store.active_banners()),
            "connected_users": ext.state.connected_users()}


@emergency_group.command("diagnostics")
@json_option
def diagnostics_command(as_json: bool) -> None:
    """Versions, backends, counts and the extension's config (credentials redacted)."""
    ext = ext_state()
    state = ext.state
    try:
        counts: dict[str, Any] = _counts(ext)
    except sa.exc.SQLAlchemyError as exc:
        counts = {"error": f"{type(exc).__name__}: {exc}"}
    # each part kept in its own typed name: the text lines read them, the JSON nests them
    versions = _versions()
    backend: dict[str, Any] = {
        "shared_state": state.backend, "shared_state_healthy": bool(state.healthy),
        "redis_url": redact_url(state.url) if getattr(state, "url", None) else None,
        "redis_key_prefix": getattr(state, "prefix", None),
        "database": ext.engine.url.render_as_string(hide_password=True),
        "database_dialect": ext.engine.dialect.name,
        "socketio": _socketio_info(ext),
    }
    config = redacted(dict(ext.app.config))
    ok = "error" not in counts
    data = {
        "versions": versions,
        "process": {"pid": os.getpid(), "executable": sys.executable, "platform": platform.platform()},
        "backend": backend,
        "counts": counts,
        "config": config,
        "ok": ok,
    }

    def lines() -> list[str]:
        out = ["Versions:"] + [f"  {k:<24} {v or 'not installed'}" for k, v in versions.items()]
        out.append("Backend:")
        out += [f"  {k:<24} {v}" for k, v in backend.items()]
        out.append("Counts:")
        out += [f"  {k:<24} {v}" for k, v in counts.items()]
        out.append("Config:")
        out += [f"  {k} = {v!r}" for k, v in config.items()]
        return out

    report(data, as_json, lines)
    done(ok)

"""``monitor``: run the cluster's monitor as a process of its own (systemd, supervisor,
Kubernetes), and the dead man's switch every command shares.

The process takes part in the same election as the serving workers' monitor threads: it
ticks while it holds the lock and stands by otherwise. SIGTERM or SIGINT stop it cleanly:
the current tick's backoff is interrupted, the lock is given up, the exit status is 0.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from ..respond import operator_hold
from ..automation import heartbeat_status
from . import emergency_group
from .output import SOURCE, actor, done, ext_state, json_option, report, to_json


def _tick_line(result: dict[str, Any]) -> str:
    health = result.get("health") or {}
    failing = ", ".join(health.get("failing") or []) or "none failing"
    note = result.get("note") or (result.get("classification") or {}).get("reason") or ""
    return f"{result.get('status')}: {failing}" + (f"; {note}" if note else "")


@emergency_group.command("monitor")
@click.option("--once", is_flag=True, help="Run one check now (ignoring the election) and exit.")
@json_option
def monitor_command(once: bool, as_json: bool) -> None:
    """Run the monitor in this process until SIGTERM or Ctrl-C (one per cluster is active)."""
    ext = ext_state()
    monitor = ext.monitor
    if once:
        result = monitor.tick()
        report(result, as_json, [_tick_line(result)])
        done(result.get("status") not in ("activated", "emergency", "database-unreachable"))
        return
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    was_leader: list[bool | None] = [None]

    def on_tick(result: dict[str, Any]) -> None:
        click.echo(to_json(result).replace("\n", "") if as_json else _tick_line(result))

    monitor.tick_listeners.append(on_tick)
    try:
        if not as_json:
            try:
                seen = heartbeat_status(ext)["detail"]
            except Exception:  # the database is down: the monitor runs anyway, and says so per check
                seen = "the database does not answer"
            click.echo(f"Monitoring every {monitor.interval:g}s as {ext.state.process_id} ({seen}); "
                       "SIGTERM or Ctrl-C stops.")
        monitor.start()
        while not stopping.wait(min(monitor.poll, 1.0)):
            if monitor.elections and monitor.is_leader != was_leader[0]:
                was_leader[0] = monitor.is_leader
                if not as_json:
                    click.echo("holding the monitor lock: checking" if monitor.is_leader
                               else "another monitor holds the lock: standing by")
            if not monitor.running:
                break
    finally:
        monitor.tick_listeners.remove(on_tick)
        monitor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        click.echo(to_json({"ok": True, "stopped": True}).replace("\n", ""))
    else:
        click.echo("Monitor stopped; lock released.")


@emergency_group.command("release-hold")
@json_option
def release_hold_command(as_json: bool) -> None:
    """End the operator hold now: the monitor may activate emergency mode and roll back again."""
    ext = ext_state()
    who = actor()
    hold = operator_hold.release(ext, who)
    ext.audit.record(who, "release-hold", SOURCE, {}, outcome="ok" if hold else "noop",
                     detail=f"held after '{hold['action']}' by {hold['by']}" if hold else "no hold was in force")
    data = {"ok": True, "released": hold}
    report(data, as_json, [f"Released the operator hold after '{hold['action']}' by {hold['by']}; the monitor "
                           "acts on its next check." if hold else "No operator hold was in force."])

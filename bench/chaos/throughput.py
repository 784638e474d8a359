"""The throughput pair of the chaos suite: raw Flask-SocketIO emits against ``notify.send()``,
in the same deployment, then ``send()`` offered more than it can take.

1. **Saturation** (open-loop ramp): notifications are offered at a rising rate, each step
   ``step_seconds`` long and ``RAMP_FACTOR`` times the one before, on schedule whatever the
   replies do (a queue of requests in flight, as many sender threads as needed), once to the
   raw-emit route and once to the ``send()`` route. A step kept up when at least
   ``KEPT_UP`` of what it offered was delivered by the end of its window; the ramp stops at
   the first step that did not (or whose displays came slower than it offered) unless that
   step still delivered ``RAMP_GROWTH`` times the best before it. A step's
   delivered throughput is the rate its notifications were first displayed at, over the
   middle 90 % of them (:func:`delivery_rate`; socket displays for raw emits, their only
   channel; any channel for ``send()``): the offered rate while it keeps up, the rate its
   backlog drains at when it does not. The saturation throughput is the most of any step.
   Closed-loop senders would measure each request's latency instead: ``send()`` answers
   later than a raw emit (it stores the row first), so the same threads offer it less.
2. **CPU**: read from ``/proc/<pid>/stat`` of every process of the deployment (the gunicorn
   workers, the private Redis, the database server) around each step, less what the same
   parts spend idle in as long (measured first, with nothing sent: the users' polls, the
   monitor), divided by the notifications sent. ``send_cpu_per_notification_ratio`` compares
   the two at the fastest offered rate both kept up with, so both did the same work at the
   same pace.
3. **Overload** (open loop): ``send()`` is offered 1.5× and 2× its saturation throughput.
   Delivered throughput, counted as in the ramp, is a share of the saturation peak;
   afterwards everything must arrive (``lost``) and nothing twice.

The database server is the machine's own (other work on the machine counts in its CPU): the
worker and Redis shares are reported apart so a noisy total can be checked.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import subprocess
import threading
import time
from typing import Any, Callable

import sqlalchemy as sa

from .deploy import Deployment
from .report import count, detected_events
from .users import Sender

#: Seconds after the senders stop that deliveries still count towards throughput.
TAIL_SECONDS = 3.0


def _ticks(pid: int) -> int:
    with contextlib.suppress(OSError):
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def database_pids(dep: Deployment) -> list[int]:
    """The database server's processes (every PostgreSQL backend; the one mariadbd)."""
    names = ("postgres",) if "postgres" in dep.direct_url else ("mariadbd", "mysqld")
    pids: list[int] = []
    for name in names:
        out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    return pids


def cpu_by_part(dep: Deployment) -> dict[str, float]:
    """CPU seconds so far of the workers, the private Redis and the database server."""
    hz = os.sysconf("SC_CLK_TCK")
    workers = sum(_ticks(pid) for worker in dep.workers for pid in worker.pids())
    redis = _ticks(dep.redis.proc.pid) if dep.redis.proc is not None else 0
    database = sum(_ticks(pid) for pid in database_pids(dep))
    return {"workers": workers / hz, "redis": redis / hz, "database": database / hz}


def _delta(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Milliseconds of CPU per notification, by part and in all."""
    out = {part: round((after[part] - before[part]) * 1000 / max(n, 1), 3) for part in before}
    out["all"] = round(sum(out.values()), 3)
    return out


#: The first rate offered in a ramp (per second), and each next step's factor.
RAMP_START = 40.0
RAMP_FACTOR = 1.5
#: A step kept up when this share of what it offered was delivered by the end of its window
#: (the offer plus ``TAIL_SECONDS``).
KEPT_UP = 0.9
#: Delivered throughput is counted over this middle share of a run's displays.
SPAN_SHARE = 0.9
#: A step that did not keep up ends the ramp unless it delivered this much more than the best
#: step before it (the path still had room: the step was noise, not saturation).
RAMP_GROWTH = 1.1
#: Steps at most (40/s times 1.5**9: about 1,500/s).
RAMP_STEPS = 10
#: What the report keeps of each step.
STEP_KEYS = ("offered_per_s", "delivered_per_s", "kept_up", "lost", "refused", "refusals", "sent", "events",
             "modes_seen", "socket_p99_ms", "any_p99_ms", "cpu_ms_per_notification", "cpu_seconds",
             "cpu_window_seconds")


def offer(dep: Deployment, users: dict[str, Any], *, rate: float, seconds: float, drain_max: float,
          raw: bool = False, max_senders: int = 256) -> dict[str, Any]:
    """Open loop: ``rate`` sends per second for ``seconds`` whatever the replies do."""
    run = secrets.token_hex(3)
    sender = Sender([w.url for w in dep.workers], run, dep.token)
    ids = list(users)
    jobs: queue.Queue[str | None] = queue.Queue()
    total = max(1, int(rate * seconds))
    senders: list[threading.Thread] = []

    def grow() -> None:
        if len(senders) < max_senders:
            t = threading.Thread(target=sender.serve, args=(jobs, raw), daemon=True)
            t.start()
            senders.append(t)

    for _ in range(32):
        grow()
    for user in users.values():
        user.modes_seen.clear()
    cpu0 = cpu_by_part(dep)
    start = time.time()
    for i in range(total):
        due = start + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        if jobs.qsize() > 4:
            grow()  # open loop: requests in flight pile up rather than slowing the offer
        jobs.put(ids[i % len(ids)])
    offered_for = time.time() - start
    for _ in senders:
        jobs.put(None)
    for t in senders:
        t.join()
    window_end = start + offered_for + TAIL_SECONDS
    while time.time() < window_end:
        time.sleep(0.2)
    cpu1 = cpu_by_part(dep)
    cpu = _delta(cpu0, cpu1, len(sender.sent))
    cpu_seconds = {part: round(cpu1[part] - cpu0[part], 3) for part in cpu0}
    cpu_window = round(time.time() - start, 3)
    channel = "socket" if raw else None
    shown_in_window = len(_first_displays(users, sender.sent, start, window_end, channel))
    # then: everything arrives, once (raw emits have no second chance: what missed is missed)
    deadline = time.time() + drain_max
    while time.time() < deadline:
        shown = {d.marker for u in users.values() for d in list(u.tally.displays)}
        if all(m in shown for m in sender.sent):
            break
        time.sleep(0.5)
    counted = count(sender.sent, users)
    lost = counted.pop("lost_markers")
    offered = round(total / offered_for, 1)
    delivered = delivery_rate(sorted(_first_displays(users, sender.sent, start, time.time(), channel).values()))
    # what the monitor made of it: overload is not an outage
    events = [{k: e[k] for k in ("level", "failure_type", "reason")} for e in detected_events(dep, start)]
    modes = sorted(set().union(*(user.modes_seen for user in users.values())) | {"normal"})
    return {"events": events, "modes_seen": modes, "lost_rows": [] if raw else _rows_of(dep, lost),
            "offered_per_s": offered, "sent": len(sender.sent), "refused": sender.refused,
            "refusals": dict(sender.refusals), "delivered_per_s": delivered, "senders": len(senders),
            "delivered_in_window": shown_in_window,
            "kept_up": shown_in_window >= KEPT_UP * total and delivered >= KEPT_UP * offered,
            "displayed": counted["displayed"], "lost": counted["lost"],
            "visible_duplicates": counted["visible_duplicates"], "any_p99_ms": counted["any_p99_ms"],
            "socket_p99_ms": counted["socket_p99_ms"], "cpu_ms_per_notification": cpu,
            "cpu_seconds": cpu_seconds, "cpu_window_seconds": cpu_window}


def ramp(dep: Deployment, users: dict[str, Any], *, raw: bool, step_seconds: float) -> dict[str, Any]:
    """Rising open-loop steps until one does not keep up; the saturation throughput is the
    most delivered per second in any step."""
    steps: list[dict[str, Any]] = []
    rate = RAMP_START
    best = 0.0
    for _ in range(RAMP_STEPS):
        step = offer(dep, users, rate=rate, seconds=step_seconds, drain_max=step_seconds * 2, raw=raw)
        steps.append(step)
        time.sleep(TAIL_SECONDS)  # what is still in flight settles before the next step
        if not step["kept_up"] and step["delivered_per_s"] < best * RAMP_GROWTH:
            break  # behind, and no faster than before: saturated (one noisy step does not end it)
        best = max(best, step["delivered_per_s"])
        rate *= RAMP_FACTOR
    peak = max(steps, key=lambda s: s["delivered_per_s"])
    return {"per_s": peak["delivered_per_s"], "p99_ms": peak["socket_p99_ms"] if raw else peak["any_p99_ms"],
            "steps": [{k: step[k] for k in STEP_KEYS} for step in steps]}


def idle_cpu(dep: Deployment, seconds: float) -> dict[str, float]:
    """CPU seconds per second of every part while nothing is sent: the users' polls and page
    loads, the monitor, the database server's own work."""
    before, start = cpu_by_part(dep), time.time()
    time.sleep(seconds)
    after, took = cpu_by_part(dep), time.time() - start
    return {part: round((after[part] - before[part]) / took, 4) for part in before}


def _net_ms(step: dict[str, Any], idle: dict[str, float]) -> dict[str, float]:
    """A step's CPU per notification in milliseconds without the idle CPU of its window."""
    out = {part: round(max(0.0, step["cpu_seconds"][part] - idle[part] * step["cpu_window_seconds"]) * 1000
                       / max(step["sent"], 1), 3) for part in idle}
    out["all"] = round(sum(out.values()), 3)
    return out


#: Steps offered less than this are left out of the worst CPU ratio: at a few dozen a second
#: the fixed costs of each second (timers, sweeps) weigh on each notification.
CPU_RATIO_MIN_RATE = 80.0


def _cpu_at_common_rate(raw: dict[str, Any], send: dict[str, Any],
                        idle: dict[str, float]) -> tuple[float | None, dict[str, Any]]:
    """CPU per notification of both at the fastest offered rate both kept up with (the first
    step when one of them kept up with none), the idle CPU of the step's window taken off:
    at a low rate the idle work would count as much as the sends. Also the ratio at every
    rate both kept up with (``ratio_by_rate``) and the worst of those from
    :data:`CPU_RATIO_MIN_RATE` up (``worst_ratio``): ``send()`` batches more the busier it
    is, so its ratio is lowest near saturation and highest at moderate rates."""
    pairs = list(zip(raw["steps"], send["steps"]))
    both = [(r, s) for r, s in pairs if r["kept_up"] and s["kept_up"]]
    by_rate = []
    for r, s in both:
        raw_all, send_all = _net_ms(r, idle)["all"], _net_ms(s, idle)["all"]
        if raw_all:
            by_rate.append({"offered_per_s": s["offered_per_s"], "ratio": round(send_all / raw_all, 2),
                            "raw_ms": raw_all, "send_ms": send_all})
    r, s = (both or pairs[:1])[-1]
    raw_net, send_net = _net_ms(r, idle), _net_ms(s, idle)
    counted = [step["ratio"] for step in by_rate if step["offered_per_s"] >= CPU_RATIO_MIN_RATE]
    out = {"offered_per_s": s["offered_per_s"], "idle_cpu_per_second": idle,
           "raw_cpu_ms_per_notification": raw_net, "send_cpu_ms_per_notification": send_net,
           "raw_cpu_ms_per_notification_with_idle": r["cpu_ms_per_notification"],
           "send_cpu_ms_per_notification_with_idle": s["cpu_ms_per_notification"],
           "ratio_by_rate": by_rate, "worst_ratio": max(counted) if counted else None}
    return (round(send_net["all"] / raw_net["all"], 2) if raw_net["all"] else None), out


def _rows_of(dep: Deployment, markers: list[str]) -> list[dict[str, Any]]:
    """What the database holds for notifications nobody displayed (at most 20)."""
    if not markers:
        return []
    engine = sa.create_engine(dep.direct_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT id, user_id, delivered, channel, attempts, realtime_deadline, created_at, delivered_at "
                "FROM notify_emergency_notification WHERE title IN :t").bindparams(
                    sa.bindparam("t", expanding=True)), {"t": markers[:20]}).all()
    finally:
        engine.dispose()
    return [{k: (str(v) if v is not None else None) for k, v in row._mapping.items()} for row in rows]


def _first_displays(users: dict[str, Any], sent: dict[str, tuple[str, float]], start: float, end: float,
                    channel: str | None = None) -> dict[str, float]:
    """Each sent marker's first display between ``start`` and ``end`` (by ``channel``, if given)."""
    first: dict[str, float] = {}
    for user in users.values():
        for d in list(user.tally.displays):
            if d.marker in sent and start <= d.at <= end and (channel is None or d.channel == channel) \
                    and (d.marker not in first or d.at < first[d.marker]):
                first[d.marker] = d.at
    return first


def delivery_rate(times: list[float]) -> float:
    """Displays per second over the middle ``SPAN_SHARE`` of ``times`` (sorted first displays):
    the offered rate when it was kept up with, else the rate the backlog drained at. The
    first and last few are left out: the pipeline filling, a straggler a poll brought late."""
    if len(times) < 10:
        return 0.0
    cut = int(len(times) * (1 - SPAN_SHARE) / 2)
    first, last = times[cut], times[len(times) - 1 - cut]
    return round((len(times) - 1 - 2 * cut) / max(last - first, 0.001), 1)


def throughput(dep: Deployment, sign_in: Callable[[Deployment, int, str], dict[str, Any]], *, users_n: int,
               seconds: float, overload: bool = True) -> dict[str, Any]:
    """The saturation ramps (steps of ``seconds / 2``), the CPU ratio and (``overload``) the
    1.5× and 2× runs (``seconds`` each)."""
    users = sign_in(dep, users_n, "throughput")
    try:
        idle = idle_cpu(dep, seconds / 2)
        raw = ramp(dep, users, raw=True, step_seconds=seconds / 2)
        send = ramp(dep, users, raw=False, step_seconds=seconds / 2)
        out: dict[str, Any] = {
            "raw_emit_per_s": raw["per_s"], "send_per_s": send["per_s"],
            "ratio": round(send["per_s"] / raw["per_s"], 2) if raw["per_s"] else None,
            "raw_p99_ms": raw["p99_ms"], "send_p99_ms": send["p99_ms"],
            "raw_steps": raw["steps"], "send_steps": send["steps"],
        }
        out["send_cpu_per_notification_ratio"], out["cpu_compared"] = _cpu_at_common_rate(raw, send, idle)
        if overload and send["per_s"]:
            peak = send["per_s"]
            for factor, key in ((1.5, "1_5x"), (2.0, "2x")):
                time.sleep(TAIL_SECONDS)
                result = offer(dep, users, rate=peak * factor, seconds=seconds, drain_max=60.0)
                out[f"overload_{key}"] = result
                out[f"overload_{key}_share"] = round(result["delivered_per_s"] / peak, 2)
        return out
    finally:
        for user in users.values():
            user.finish()

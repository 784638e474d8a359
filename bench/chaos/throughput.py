"""The throughput pair of the chaos suite: raw Flask-SocketIO emits against ``notify.send()``,
in the same deployment, then ``send()`` offered more than it can take.

1. **Saturation** (closed loop): ``threads`` senders post as fast as replies come, for
   ``seconds``, once to the raw-emit route and once to the ``send()`` route. Socket
   deliveries per second are each one's saturation throughput; the CPU both spent, read from
   ``/proc/<pid>/stat`` of every process of the deployment (the gunicorn workers, the private
   Redis, the database server) before and after, divided by the notifications sent, gives
   ``send_cpu_per_notification_ratio``.
2. **Overload** (open loop): notifications are offered at 1.5× and 2× ``send()``'s saturation
   rate, whatever the replies do (a queue of requests in flight, as many senders as needed),
   for ``seconds``. Delivered throughput is what the users displayed (any channel) between
   the first send and the end of sending plus a short tail, per second, as a share of the
   saturation peak; afterwards everything must arrive (``lost``) and nothing twice.

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
from .report import count
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


def saturate(dep: Deployment, users: dict[str, Any], *, raw: bool, seconds: float,
             threads: int) -> dict[str, Any]:
    run = secrets.token_hex(3)
    sender = Sender([w.url for w in dep.workers], run, dep.token)
    ids = list(users)
    cpu0 = cpu_by_part(dep)
    start = time.time()
    stop = start + seconds

    def blast(k: int) -> None:
        i = k
        while time.time() < stop:
            sender.send(ids[i % len(ids)], raw=raw)
            i += threads

    senders = [threading.Thread(target=blast, args=(k,), daemon=True) for k in range(threads)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    elapsed = time.time() - start
    time.sleep(TAIL_SECONDS)  # what is in flight arrives (and is acknowledged, for send())
    cpu = _delta(cpu0, cpu_by_part(dep), len(sender.sent))
    counted = count(sender.sent, users)
    counted.pop("lost_markers")
    socket_displays = counted["displayed"].get("socket", 0)
    return {"per_s": round(socket_displays / elapsed, 1), "sent": len(sender.sent), "refused": sender.refused,
            "p99_ms": counted["socket_p99_ms"], "not_arrived_after_3s": counted["lost"],
            "cpu_ms_per_notification": cpu}


def offer(dep: Deployment, users: dict[str, Any], *, rate: float, seconds: float, drain_max: float,
          max_senders: int = 256) -> dict[str, Any]:
    """Open loop: ``rate`` sends per second for ``seconds`` whatever the replies do."""
    run = secrets.token_hex(3)
    sender = Sender([w.url for w in dep.workers], run, dep.token)
    ids = list(users)
    jobs: queue.Queue[str | None] = queue.Queue()
    total = int(rate * seconds)
    senders: list[threading.Thread] = []

    def grow() -> None:
        if len(senders) < max_senders:
            t = threading.Thread(target=sender.serve, args=(jobs,), daemon=True)
            t.start()
            senders.append(t)

    for _ in range(32):
        grow()
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
    shown_in_window = _first_displays_between(users, sender.sent, start, window_end)
    # then: everything arrives, once
    deadline = time.time() + drain_max
    while time.time() < deadline:
        shown = {d.marker for u in users.values() for d in list(u.tally.displays)}
        if all(m in shown for m in sender.sent):
            break
        time.sleep(0.5)
    counted = count(sender.sent, users)
    lost = counted.pop("lost_markers")
    return {"lost_rows": _rows_of(dep, lost), "offered_per_s": round(total / offered_for, 1), "sent": len(sender.sent), "refused": sender.refused,
            "delivered_per_s": round(shown_in_window / (window_end - start), 1), "senders": len(senders),
            "displayed": counted["displayed"], "lost": counted["lost"],
            "visible_duplicates": counted["visible_duplicates"], "any_p99_ms": counted["any_p99_ms"],
            "socket_p99_ms": counted["socket_p99_ms"]}


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


def _first_displays_between(users: dict[str, Any], sent: dict[str, tuple[str, float]], start: float,
                            end: float) -> int:
    first: dict[str, float] = {}
    for user in users.values():
        for d in list(user.tally.displays):
            if d.marker in sent and start <= d.at <= end and (d.marker not in first or d.at < first[d.marker]):
                first[d.marker] = d.at
    return len(first)


def throughput(dep: Deployment, sign_in: Callable[[Deployment, int, str], dict[str, Any]], *, users_n: int,
               seconds: float, threads: int, overload: bool = True) -> dict[str, Any]:
    """The saturation pair, the CPU ratio and (``overload``) the 1.5× and 2× runs."""
    users = sign_in(dep, users_n, "throughput")
    try:
        raw = saturate(dep, users, raw=True, seconds=seconds, threads=threads)
        send = saturate(dep, users, raw=False, seconds=seconds, threads=threads)
        out: dict[str, Any] = {
            "raw_emit_per_s": raw["per_s"], "send_per_s": send["per_s"],
            "ratio": round(send["per_s"] / raw["per_s"], 2) if raw["per_s"] else None,
            "raw_p99_ms": raw["p99_ms"], "send_p99_ms": send["p99_ms"],
            "raw_not_arrived_after_3s": raw["not_arrived_after_3s"],
            "send_not_arrived_after_3s": send["not_arrived_after_3s"],
            "raw_sent": raw["sent"], "send_sent": send["sent"], "raw_refused": raw["refused"],
            "send_refused": send["refused"],
            "raw_cpu_ms_per_notification": raw["cpu_ms_per_notification"],
            "send_cpu_ms_per_notification": send["cpu_ms_per_notification"],
        }
        raw_all = raw["cpu_ms_per_notification"]["all"]
        out["send_cpu_per_notification_ratio"] = (
            round(send["cpu_ms_per_notification"]["all"] / raw_all, 2) if raw_all else None)
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

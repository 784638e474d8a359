"""Bulk sends: ``notify.send_many()`` against a loop of ``notify.send()``, per notification.

* ``send_many_speedup``: the per-notification time of a loop of ``send()`` over 10,000 users
  divided by that of one ``send_many()`` to the same 10,000 users (SQLite, memory state
  backend, the host's Flask-SocketIO without a message queue). Target: at least 20.

Both sides do the same work for the same users: 1,000 of them (10%) are in the connection
registry, so their rows take the real-time path (an emit to their room on this worker's
Socket.IO server, an acknowledgement deadline); the other 9,000 go to the fallbacks (the
``notification_fallback`` signal, a pending marker). Every user exists in the host's user
table; a warm-up call of each side fills the extension's cache of known users first, so
neither side pays the host's user loader. Rounds alternate the order of the two sides; the
speedup is the median over rounds of (loop time per notification / bulk time per notification).
"""

from __future__ import annotations

import statistics
import tempfile
from typing import Any

import sqlalchemy as sa

from .host import build_host
from .timing import Options, progress, time_batch

SPEEDUP_TARGET = 20.0
USERS = 10_000
CONNECTED_SHARE = 10  # one user in this many is connected
#: ``--quick`` times the loop over the first 500 users only (each ``send()`` is independent, so
#: its cost per notification does not depend on how many follow); the full run loops over all.
LOOP_USERS_QUICK = 500

#: Acknowledgements never time out during a run: the watcher does not compete for the CPU.
CONFIG = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 3600.0}


def bench_send_many(options: Options) -> dict[str, Any]:
    """Per-notification cost of a ``send()`` loop over that of ``send_many()``, 10,000 users."""
    runs = options.pick(1, 3)
    loop_users = options.pick(LOOP_USERS_QUICK, USERS)
    with tempfile.TemporaryDirectory(prefix="ne-bench-bulk-") as tmp:
        host = build_host(tmp, config=CONFIG)
        try:
            host.add_users(USERS, prefix="bulk")
            app, notify = host.app, host.notify
            assert notify is not None
            ext = app.extensions["notify_emergency"]
            with app.app_context():
                users = [str(r[0]) for r in host.db.session.execute(
                    sa.select(host.User.id).where(host.User.username.like("bulk%")).order_by(host.User.id))]
                for uid in users[::CONNECTED_SHARE]:
                    ext.state.connection_opened(uid)
            title, message = "Maintenance tonight", "The service pauses from 22:00 to 22:15 UTC."

            def loop(n: int) -> None:
                for uid in users[:n]:
                    notify.send(uid, title, message, priority="high")

            def bulk(n: int) -> None:
                ids = notify.send_many(users[:n], title, message, priority="high")
                if len(ids) != n:
                    raise RuntimeError(f"send_many returned {len(ids)} ids for {n} users")

            with app.app_context():
                notify.send_many(users, title, message)  # untimed: fills the cache of known users
                progress(f"  {USERS} users; the loop over {loop_users} of them, {runs} round(s) of each side")
                loop_us, bulk_us, loop_cpu, bulk_cpu = [], [], [], []
                for round_no in range(runs):
                    sides = [(loop, loop_users, loop_us, loop_cpu), (bulk, USERS, bulk_us, bulk_cpu)]
                    for batch, n, wall_out, cpu_out in (reversed(sides) if round_no % 2 else sides):
                        wall, cpu = time_batch(batch, n)
                        wall_out.append(wall)
                        cpu_out.append(cpu)
                stored = host.db.session.scalar(sa.select(sa.func.count()).select_from(ext.models.Notification))
        finally:
            host.close()
    speedup = statistics.median(a / b for a, b in zip(loop_us, bulk_us))
    progress(f"  send() loop {statistics.median(loop_us):.1f} us per notification, "
             f"send_many {statistics.median(bulk_us):.1f} us: {speedup:.1f}x")
    return {
        "send_many_speedup": round(speedup, 1),
        "send_many_cpu_speedup": round(statistics.median(a / b for a, b in zip(loop_cpu, bulk_cpu)), 1),
        "send_many_median_us": round(statistics.median(bulk_us), 1),
        "send_many_loop_median_us": round(statistics.median(loop_us), 1),
        "send_many_users": USERS,
        "send_many_loop_users": loop_users,
        "send_many_runs": runs,
        "send_many_rows_stored": int(stored or 0),
        "minimums": {"send_many_speedup": SPEEDUP_TARGET},
    }


BENCHMARKS = [("send_many_speedup", bench_send_many)]

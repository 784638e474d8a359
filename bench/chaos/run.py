"""Run the chaos suite: ``python -m bench.chaos.run [--quick] [--database mariadb|postgres]
[--worker-class gthread|gevent]``. Prints one line per run and, last, one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.chaos import network  # noqa: E402
from bench.chaos.deploy import PASSWORD, Deployment, deployed  # noqa: E402
from bench.chaos.browsers import BrowserTabs, BrowserUser  # noqa: E402
from bench.chaos.report import count, detected_events, plot  # noqa: E402
from bench.chaos.throughput import throughput  # noqa: E402
from bench.chaos.users import Sender, SimUser  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
#: The deployment's settings: short intervals, so a run sees detection and recovery.
CONFIG = {
    "NOTIFY_EMERGENCY_MONITOR_INTERVAL": 2.0, "NOTIFY_EMERGENCY_HEALTHY_CHECKS_TO_RECOVER": 2,
    "NOTIFY_EMERGENCY_ACK_TIMEOUT": 3.0, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 1.0,
    "NOTIFY_EMERGENCY_POLL_INTERVAL": 2.0, "NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT": 1.0,
    "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": 1.5, "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.5,
    "NOTIFY_EMERGENCY_RECOVERY_BACKOFF": 0.5, "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 1.0,
    "NOTIFY_EMERGENCY_ALERT_EMAILS": [], "NOTIFY_EMERGENCY_ALERT_COOLDOWN": 60.0,
    "NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT": 10.0,
}


class Fault:
    """A fault: what starts it and what reverts it."""

    def __init__(self, name: str, begin: Callable[[Deployment, dict[str, SimUser]], None],
                 end: Callable[[Deployment, dict[str, SimUser]], None], seconds: float | None = None) -> None:
        self.name, self.begin, self.end = name, begin, end
        #: how long it lasts (None: the version's default)
        self.seconds = seconds


def _nothing(dep: Deployment, users: dict[str, SimUser]) -> None:
    return None


def _drop_acks(rate: float) -> Callable[[Deployment, dict[str, SimUser]], None]:
    def apply(dep: Deployment, users: dict[str, SimUser]) -> None:
        for user in users.values():
            if isinstance(user, SimUser):  # a Chromium tab keeps its acknowledgements
                user.set_drop_acks(rate)
    return apply


def _restart_redis(dep: Deployment, users: dict[str, SimUser]) -> None:
    dep.redis.start()  # empty: nothing on disk


def _cli(*args: str) -> Callable[[Deployment, dict[str, SimUser]], None]:
    """A ``flask emergency`` command from a third process, as an operator types it."""
    def run(dep: Deployment, users: dict[str, SimUser]) -> None:
        env = dict(os.environ, CHAOS_CONFIG=json.dumps({**dep.config, "NOTIFY_EMERGENCY_MONITOR_ENABLED": False}),
                   PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "bench.chaos.wsgi:app", "emergency", *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            print(f"  flask emergency {' '.join(args)} exited {done.returncode}: "
                  f"{(done.stderr or done.stdout).strip()[-300:]}", flush=True)
    return run


def _kill_worker(dep: Deployment, users: dict[str, SimUser]) -> None:
    dep.cpu_seconds()  # the CPU it used until now still counts
    dep.workers[0].kill_worker()


def _partition(dep: Deployment, users: dict[str, SimUser]) -> None:
    assert dep.network is not None, "the partition run needs a deployment on hosts of their own"
    dep.network.partition(dep.network.hosts[0])


def _heal(dep: Deployment, users: dict[str, SimUser]) -> None:
    assert dep.network is not None
    dep.network.heal(dep.network.hosts[0])


FAULTS = {
    "baseline": Fault("baseline", _nothing, _nothing),
    "queue_redis_killed": Fault("queue_redis_killed", lambda d, u: d.redis.kill(), _restart_redis),
    "queue_redis_frozen": Fault("queue_redis_frozen", lambda d, u: d.redis.freeze(), lambda d, u: d.redis.thaw()),
    "acks_dropped": Fault("acks_dropped", _drop_acks(0.1), _drop_acks(0.0)),
    "worker_killed": Fault("worker_killed", _kill_worker,
                           lambda d, u: d.workers[0].wait_ready()),
    "database_cut": Fault("database_cut", lambda d, u: d.proxy.cut(), lambda d, u: d.proxy.open()),
    "emergency_toggled": Fault("emergency_toggled", _cli("activate-emergency", "--reason", "chaos run"),
                               _cli("deactivate-emergency", "--force", "--reason", "chaos run over")),
    "rollback_restore": Fault("rollback_restore", _cli("rollback", "--confirm", "--reason", "chaos run"),
                              _cli("restore", "--confirm")),
    # on its own deployment: each worker host and Redis in a network namespace (network.py)
    "network_partition": Fault("network_partition", _partition, _heal, seconds=10.0),
}
#: runs that need the deployment on hosts of their own
ON_HOSTS = ("network_partition",)
#: a row still undelivered this long after the drain is stuck: a confirmation on its way
#: arrives with the tab's next poll or page (``POLL_INTERVAL``, raised under load) or reconnect
STUCK_AFTER = 15.0
#: the most a quick run waits for the cluster to be back to normal before it starts
SETTLE_QUICK = 20.0
QUICK = ("baseline", "queue_redis_killed", "queue_redis_frozen", "acks_dropped", "worker_killed")
FULL = QUICK + ("database_cut", "emergency_toggled", "rollback_restore", "network_partition")


def stuck(dep: Deployment, run: str, wait: float = 0.0) -> int:
    """The run's rows still undelivered, once the confirmations on their way (in a tab's
    outbox until its next request or reconnect) had up to ``wait`` seconds to arrive."""
    engine = sa.create_engine(dep.direct_url)
    deadline = time.time() + wait
    try:
        while True:
            with engine.connect() as conn:
                left = int(conn.execute(sa.text(
                    "SELECT COUNT(*) FROM notify_emergency_notification WHERE delivered = :f AND title LIKE :t"),
                    {"f": False, "t": f"chaos:{run}:%"}).scalar_one())
            if not left or time.time() >= deadline:
                return left
            time.sleep(0.5)
    finally:
        engine.dispose()


def first_displays(users: dict[str, SimUser]) -> dict[str, tuple[str, float]]:
    first: dict[str, tuple[str, float]] = {}
    for user in users.values():
        for d in user.tally.displays:
            if d.marker not in first or d.at < first[d.marker][1]:
                first[d.marker] = (d.channel, d.at)
    return first


def lost_rows(dep: Deployment, markers: list[str]) -> dict[str, int]:
    """How the database says the lost ones went (channel, or 'undelivered')."""
    if not markers:
        return {}
    engine = sa.create_engine(dep.direct_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT title, delivered, channel FROM notify_emergency_notification "
                                        "WHERE title IN :t").bindparams(sa.bindparam("t", expanding=True)),
                                {"t": markers}).all()
    finally:
        engine.dispose()
    out: dict[str, int] = {}
    for r in rows:
        key = (r.channel or "?") if r.delivered else "undelivered"
        out[key] = out.get(key, 0) + 1
    return out


def settle(dep: Deployment, limit: float = 60.0) -> float:
    """Wait until the cluster is back to normal (mode normal, no open event); seconds waited."""
    engine = sa.create_engine(dep.direct_url)
    start = time.time()
    try:
        while time.time() - start < limit:
            try:
                with engine.connect() as conn:
                    mode = conn.execute(sa.text("SELECT value FROM notify_emergency_control WHERE "
                                                "`key` = 'mode'" if "mysql" in dep.direct_url else
                                                "SELECT value FROM notify_emergency_control WHERE key = 'mode'")).scalar()
                    open_events = conn.execute(sa.text("SELECT COUNT(*) FROM notify_emergency_event "
                                                       "WHERE status <> 'resolved'")).scalar_one()
                if (mode is None or "normal" in str(mode)) and not open_events:
                    break
            except sa.exc.DBAPIError:
                pass
            time.sleep(1.0)
    finally:
        engine.dispose()
    return round(time.time() - start, 1)


def sign_in(dep: Deployment, n: int, run: str, browsers: int = 0) -> dict[str, Any]:
    """``n`` simulated tabs and ``browsers`` Chromium tabs, each a user of its own."""
    users: dict[str, Any] = {}
    for i in range(n):
        base = dep.workers[i % len(dep.workers)].url
        user = SimUser(base, f"user{i}", PASSWORD, page_every=10.0, seed=hash((run, i)) & 0xffff)
        user.start()
        users[dep.user_ids[f"user{i}"]] = user
    if browsers:
        names = [f"user{n + i}" for i in range(browsers)]
        tabs = BrowserTabs([w.url for w in dep.workers], names, PASSWORD)
        tabs.start()
        for name in names:
            users[dep.user_ids[name]] = BrowserUser(tabs, name)
    return users


def one_run(dep: Deployment, fault: Fault, users: dict[str, Any], *, users_n: int, per_user: int,
            send_seconds: float, fault_at: float, fault_seconds: float, drain_max: float,
            settle_max: float = 60.0) -> dict[str, Any]:
    run = secrets.token_hex(3)
    settled = settle(dep, settle_max)
    sender = Sender([w.url for w in dep.workers], run, dep.token)
    total = users_n * per_user
    interval = send_seconds / total
    jobs: queue.Queue[str | None] = queue.Queue()
    ids = list(users)
    start = time.time()
    cpu0 = dep.cpu_seconds()
    window: list[float] = []

    threads = [threading.Thread(target=sender.serve, args=(jobs,), daemon=True) for _ in range(8)]
    for t in threads:
        t.start()

    def chaos() -> None:
        time.sleep(fault_at)
        window.append(time.time())
        try:
            fault.begin(dep, users)
            time.sleep(fault.seconds or fault_seconds)
        finally:
            try:
                fault.end(dep, users)  # always reverted
            finally:
                window.append(time.time())

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    for i in range(total):
        due = start + i * interval
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        jobs.put(ids[i % len(ids)])
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    chaos_thread.join()
    fault_end = window[-1]
    # drain: until every sent notification is displayed by its user, or the limit
    deadline = time.time() + drain_max
    while time.time() < deadline:
        shown = {d.marker for u in users.values() for d in u.tally.displays}
        if all(m in shown for m in sender.sent):
            break
        time.sleep(0.5)
    end = time.time()
    cpu = dep.cpu_seconds() - cpu0
    result = count(sender.sent, users)
    result["lost_by_database_channel"] = lost_rows(dep, result.pop("lost_markers"))
    first = first_displays(users)
    before_end = [first[m][1] for m, (_, at) in sender.sent.items() if at < fault_end and m in first]
    complete = all(m in first for m, (_, at) in sender.sent.items() if at < fault_end)
    after = [first[m][0] for m, (_, at) in sender.sent.items() if at >= fault_end + 10.0 and m in first]
    events = detected_events(dep, start)
    for event in events:
        event["seconds_after_fault_start"] = round(event.pop("detected_epoch") - window[0], 2)
        resolved = event.pop("resolved_epoch")
        # how long the emergency outlived its cause (None: still open at the end of the run)
        event["resolved_seconds_after_fault_end"] = None if resolved is None else round(resolved - fault_end, 2)
    result.update({
        "settle_seconds_before": settled,
        "drain_seconds": (round(max([0.0] + [t - fault_end for t in before_end]), 2) if complete else None),
        "socket_share_10s_after_fault": round(after.count("socket") / len(after), 3) if after else None,
        "detected": events,
        "refused": sender.refused, "stuck": stuck(dep, run, wait=STUCK_AFTER), "worker_cpu_seconds": round(cpu, 2),
        "fault_window": [round(window[0] - start, 2), round(window[-1] - start, 2)],
    })
    plot(os.path.join(RESULTS, f"chaos-{fault.name}.svg"), fault.name, users, start, end,
         (window[0], window[-1]) if fault.name != "baseline" else None)
    return result


def targets(results: dict[str, Any]) -> dict[str, bool]:
    """Each target of docs/chaos.md, met or not (reported, never asserted)."""
    runs = [r for r in results["runs"].values() if not r.get("error")]
    met = {
        "lost_0": all(r["lost"] == 0 for r in runs),
        "stuck_0": all(r["stuck"] == 0 for r in runs),
        "visible_duplicates_0": all(r["visible_duplicates"] == 0 for r in runs),
        "socket_back_to_95_percent_10s_after_fault": all((r["socket_share_10s_after_fault"] or 0) >= 0.95
                                                         for r in runs if r["socket_share_10s_after_fault"] is not None),
    }
    throughput = results.get("throughput") or {}
    ratio = throughput.get("ratio")
    met["throughput_ratio_0_5"] = ratio is not None and ratio >= 0.5
    cpu = throughput.get("send_cpu_per_notification_ratio")
    met["send_cpu_ratio_2_5"] = cpu is not None and cpu <= 2.5
    # and at every rate both kept up with, from a moderate one up (not only near saturation)
    worst = (throughput.get("cpu_compared") or {}).get("worst_ratio")
    met["send_cpu_ratio_2_5_at_every_rate"] = worst is not None and worst <= 2.5
    for key in ("overload_1_5x_share", "overload_2x_share"):
        share = throughput.get(key)
        if share is not None:
            met[key.replace("_share", "_0_9")] = share >= 0.9
    loads = [r for key in ("overload_1_5x", "overload_2x") if (r := throughput.get(key))]
    loads += [step for key in ("raw_steps", "send_steps") for step in throughput.get(key) or []]
    if loads:  # what the monitor reported while the load ran: overload at level 3 or 4, never an
        # outage, and emergency mode never on (no tab was told of another mode)
        met["load_reports_no_outage"] = all(e["failure_type"] == "overload" and e["level"] >= 3
                                            for r in loads for e in r.get("events", [])) \
            and all(r.get("modes_seen", ["normal"]) == ["normal"] for r in loads)
    return met


def failures(results: dict[str, Any]) -> list[str]:
    """What ``--check`` fails on: a run that did not complete, or lost, stuck or shown twice."""
    out = []
    for name, r in results["runs"].items():
        if r.get("error"):
            out.append(f"{name}: did not complete: {r['error']}")
            continue
        for key in ("lost", "stuck", "visible_duplicates"):
            if r.get(key):
                out.append(f"{name}: {key} {r[key]}")
    return out


def _print_run(name: str, result: dict[str, Any]) -> None:
    print(f"{name}: sent {result['sent']}, lost {result['lost']}, stuck {result['stuck']}, "
          f"duplicates {result['visible_duplicates']}, drain {result['drain_seconds']} s, "
          f"displayed {result['displayed']}, socket p99 {result['socket_p99_ms']} ms, "
          f"any p99 {result['any_p99_ms']} ms, detected {result['detected']}, "
          f"{result['run_seconds']} s", flush=True)


def run_all(dep: Deployment, names: list[str], results: dict[str, Any], *, quick: bool, users_n: int,
            per_user: int, browsers: int) -> dict[str, Any]:
    """The runs of ``names`` on one deployment, the same tabs living through every run."""
    began = time.time()
    users = sign_in(dep, users_n, "runs", browsers)
    results["phase_seconds"]["sign_in"] = results["phase_seconds"].get("sign_in", 0) + round(time.time() - began, 1)
    try:
        for name in names:
            began = time.time()
            result = one_run(dep, FAULTS[name], users, users_n=users_n, per_user=per_user,
                             send_seconds=20.0 if quick else 60.0, fault_at=5.0 if quick else 15.0,
                             fault_seconds=8.0 if quick else 10.0, drain_max=20.0 if quick else 60.0,
                             settle_max=SETTLE_QUICK if quick else 60.0)
            result["run_seconds"] = round(time.time() - began, 1)
            if result["sent"] < users_n * per_user // 2:
                result["error"] = f"only {result['sent']} of {users_n * per_user} notifications were stored"
            results["runs"][name] = result
            _print_run(name, result)
    finally:
        for user in users.values():
            user.finish()
    return users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short version (CI)")
    parser.add_argument("--database", choices=("mariadb", "postgres"), default="mariadb")
    parser.add_argument("--worker-class", choices=("gthread", "gevent"), default="gthread")
    parser.add_argument("--runs", help="comma-separated runs (default: all of the version; "
                                       f"choose from {', '.join(FAULTS)}, and 'throughput')")
    parser.add_argument("--browsers", type=int, default=None,
                        help="real Chromium tabs among the users (default 5; 2 with --quick)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a run lost, left stuck or showed twice any notification")
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the throughput pair and the overload runs (100 users, no faults)")
    parser.add_argument("--no-overload", action="store_true", help="skip the 1.5x and 2x overload runs")
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    names = args.runs.split(",") if args.runs else list(QUICK if args.quick else FULL) + ["throughput"]
    unknown = [n for n in names if n not in FAULTS and n != "throughput"]
    if unknown:
        parser.error(f"unknown run {', '.join(unknown)}: choose from {', '.join(FAULTS)}, throughput")
    browsers = args.browsers if args.browsers is not None else (2 if args.quick else 5)
    if args.throughput_only:
        names, browsers = ["throughput"], 0
    users_n = 20 if args.quick else 200
    per_user = 75 if args.quick else 50   # 1,500 notifications a run in the quick version
    began = time.time()
    results: dict[str, Any] = {"runs": {}, "database": args.database, "worker_class": args.worker_class,
                               "users": users_n, "browser_tabs": browsers, "phase_seconds": {}}
    phases = results["phase_seconds"]
    plain = [n for n in names if n in FAULTS and n not in ON_HOSTS]
    on_hosts = [n for n in names if n in ON_HOSTS]
    throughput_users = 100
    if plain or "throughput" in names:
        t0 = time.time()
        workers_users = max(users_n + browsers if plain else 0, throughput_users if "throughput" in names else 0)
        with deployed(args.database, workers=2, users=workers_users, worker_class=args.worker_class,
                      config=CONFIG) as dep:
            phases["deploy"] = round(time.time() - t0, 1)
            if plain:
                run_all(dep, plain, results, quick=args.quick, users_n=users_n, per_user=per_user,
                        browsers=browsers)
            if "throughput" in names:
                t0 = time.time()
                results["throughput"] = throughput(dep, sign_in, users_n=throughput_users,
                                                   seconds=10.0 if args.quick else 30.0, overload=not args.no_overload)
                results["send_cpu_per_notification_ratio"] = results["throughput"]["send_cpu_per_notification_ratio"]
                phases["throughput"] = round(time.time() - t0, 1)
                print(f"throughput: {results['throughput']}", flush=True)
    if on_hosts:
        why = network.available()
        if why:
            for name in on_hosts:
                results["runs"][name] = {"error": f"cannot make network namespaces here: {why}"}
                print(f"{name}: not run: {why}", flush=True)
        else:
            t0 = time.time()
            with deployed(args.database, hosts=True, workers=2, users=users_n + browsers,
                          worker_class=args.worker_class, config=CONFIG) as dep:
                phases["deploy_on_hosts"] = round(time.time() - t0, 1)
                run_all(dep, on_hosts, results, quick=args.quick, users_n=users_n, per_user=per_user,
                        browsers=browsers)
    results["targets_met"] = targets(results)
    results["seconds"] = round(time.time() - began, 1)
    # the machine's load when the run ended (1, 5, 15 minutes): other work on it shows here
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    name = "chaos-throughput.json" if args.throughput_only else "chaos.json"
    with open(os.path.join(RESULTS, name), "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results))
    problems = failures(results)
    incomplete = [line for line in problems if "did not complete" in line]
    for line in (problems if args.check else incomplete):
        print(f"chaos: {line}", file=sys.stderr)
    return 1 if incomplete or (args.check and problems) else 0


if __name__ == "__main__":
    sys.exit(main())

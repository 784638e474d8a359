"""The monitor in real processes: a served app watches from boot without any traffic, and
``flask emergency monitor`` processes hand the cluster's monitor over when one is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from tests.support.apps import ROOT, ServedApp
from tests.support.outages import PrivateRedis
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.slow

FAST = {"NOTIFY_EMERGENCY_CANARY_TIMEOUT": 1.0, "NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT": 1.0,
        "NOTIFY_EMERGENCY_RECOVERY_ATTEMPTS": 1, "NOTIFY_EMERGENCY_RECOVERY_BACKOFF": 0.05}


def heartbeat(engine: sa.engine.Engine) -> dict[str, Any]:
    try:
        with engine.connect() as conn:
            value = conn.execute(sa.text(
                "SELECT value FROM notify_emergency_control WHERE key = 'monitor_heartbeat'")).scalar()
    except sa.exc.OperationalError:  # the first process is still creating the tables
        return {}
    return (json.loads(value) if isinstance(value, str) else value) or {}


def events(engine: sa.engine.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT id, failure_type, level, triggered_by, status FROM notify_emergency_event ORDER BY id"))]


@pytest.fixture
def queue() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    yield redis
    redis.stop()


def test_a_served_app_detects_a_dead_queue_with_no_request_at_all(tmp_path, queue):
    interval = 1.5
    config = dict(FAST, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'cold.sqlite'}",
                  SOCKETIO_MESSAGE_QUEUE=queue.url, NOTIFY_EMERGENCY_MONITOR_ENABLED=True,
                  NOTIFY_EMERGENCY_START_ON_BOOT=True, NOTIFY_EMERGENCY_MONITOR_INTERVAL=interval)
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    with ServedApp(free_port(), config, ready="tcp") as server:
        beat = wait_until(lambda: heartbeat(engine).get("status") == "healthy" and heartbeat(engine),
                          timeout=20, message="the served app's monitor to check, with no request served")
        assert beat["pid"] == server.proc.pid
        queue.kill()
        # the next tick comes within one interval; it fails on the dead queue and opens the event
        found = wait_until(lambda: events(engine), timeout=2 * interval,
                           message="an emergency event within two intervals of the queue's death")
        assert (found[0]["failure_type"], found[0]["triggered_by"]) == ("realtime_connection", "monitor")
    engine.dispose()


class MonitorProcess:
    """``flask --app cli_app emergency monitor`` in its own process, its output collected."""

    def __init__(self, workdir: Any) -> None:
        flask = os.path.join(os.path.dirname(sys.executable), "flask")
        self.proc = subprocess.Popen([flask, "--app", "cli_app", "emergency", "monitor"], cwd=workdir,
                                     env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_a_sigkilled_monitor_process_is_replaced_within_two_intervals(tmp_path, backend, request):
    interval = 2.0
    config: dict[str, Any] = dict(FAST, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'cluster.sqlite'}",
                                  NOTIFY_EMERGENCY_MONITOR_INTERVAL=interval)
    if backend == "redis":
        redis_url = request.getfixturevalue("redis_url")
        config.update(NOTIFY_EMERGENCY_REDIS_URL=redis_url,
                      NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=request.getfixturevalue("redis_prefix"))
    (tmp_path / "cli_app.py").write_text("from tests.support.apps import build_example\n"
                                         f"app, socketio = build_example({config!r})\n")
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    first = MonitorProcess(tmp_path)
    second: MonitorProcess | None = None
    try:
        wait_until(lambda: heartbeat(engine).get("pid") == first.proc.pid, timeout=30,
                   message="the first monitor process to take the lock and beat")
        second = MonitorProcess(tmp_path)
        wait_until(lambda: second.said("standing by"), timeout=30, message="the second process to stand by")
        assert heartbeat(engine).get("pid") == first.proc.pid  # one monitor per cluster
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        wait_until(lambda: heartbeat(engine).get("pid") == second.proc.pid, timeout=2 * interval,
                   message="the second process to take over within two intervals")
        wait_until(lambda: second.said("holding the monitor lock") and second.said("healthy"), timeout=10,
                   message="the new holder to check")
        # SIGTERM: a clean stop that gives the lock up
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=20) == 0
        wait_until(lambda: second.said("Monitor stopped; lock released."), timeout=5, message="the goodbye")
        if backend == "database":
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM notify_emergency_control "
                                            "WHERE key = 'lock:monitor'")).scalar() == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()
        engine.dispose()


def test_gunicorn_workers_watch_from_boot_and_one_of_them_monitors(tmp_path, queue):
    """Two gunicorn workers, no request at all: each starts a monitor at boot, one holds the
    lock, and the killed queue opens exactly one event within two intervals."""
    from tests.support.apps import build_example
    from tests.support.services import port_open

    interval = 1.5
    config = dict(FAST, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'gunicorn.sqlite'}",
                  SOCKETIO_MESSAGE_QUEUE=queue.url, NOTIFY_EMERGENCY_MONITOR_ENABLED=True,
                  NOTIFY_EMERGENCY_START_ON_BOOT=True, NOTIFY_EMERGENCY_MONITOR_INTERVAL=interval)
    setup, _ = build_example(dict(config, NOTIFY_EMERGENCY_START_ON_BOOT=False))  # the tables, once
    setup.extensions["notify_emergency"].close()
    (tmp_path / "cli_app.py").write_text("from tests.support.apps import build_example\n"
                                         f"app, socketio = build_example({config!r})\n")
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    port = free_port()
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen([gunicorn, "--workers", "2", "--threads", "4", "--bind", f"127.0.0.1:{port}",
                               "cli_app:app"], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT),
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open("127.0.0.1", port), timeout=30, message="gunicorn to listen")
        beat = wait_until(lambda: heartbeat(engine).get("status") == "healthy" and heartbeat(engine),
                          timeout=30, message="a gunicorn worker's monitor to check, with no request served")
        with open(f"/proc/{beat['pid']}/stat") as fh:
            parent = int(fh.read().rsplit(")", 1)[1].split()[1])
        assert parent == server.pid  # a worker, forked by the gunicorn master
        queue.kill()
        found = wait_until(lambda: events(engine), timeout=2 * interval,
                           message="an emergency event within two intervals of the queue's death")
        assert (found[0]["failure_type"], found[0]["triggered_by"]) == ("realtime_connection", "monitor")
        ticks: set[Any] = set()
        beating: set[Any] = set()

        def more_checks() -> bool:
            beat = heartbeat(engine)
            ticks.add(beat.get("tick_at"))
            beating.add(beat.get("pid"))
            return len(ticks) >= 4

        wait_until(more_checks, timeout=10 * interval, message="three more checks")
        # one monitor per cluster: every beat came from one worker, the other stood by
        assert beating == {beat["pid"]} and len(events(engine)) == 1
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        engine.dispose()

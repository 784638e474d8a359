"""Slow is not down: a real database or Redis that answers late is overload (level 3), one that
does not answer at all (cut, or silent) is the outage it always was.

The database is a real PostgreSQL database behind a TCP proxy (``proxied_database``); ``latency`` holds every reply
back (a server under load), ``cut()`` refuses and resets (a server gone). Redis is a real
``redis-server`` behind the same proxy, or frozen with SIGSTOP (accepts, never answers).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from typing import Any, Iterator

import pytest

from flask_notify_emergency.detect.classify import classify
from flask_notify_emergency.detect.health import run_health_checks
from tests.support.outages import PrivateRedis, TcpProxy
from tests.support.services import free_port, wait_until

CHECK_TIMEOUT = 0.4
#: every reply of the slow server comes this late: twice the check's deadline
LATENCY = 2 * CHECK_TIMEOUT


def ext_of(app: Any) -> Any:
    return app.extensions["notify_emergency"]


@pytest.fixture
def proxied_redis() -> Iterator[tuple[TcpProxy, PrivateRedis]]:
    redis = PrivateRedis()
    proxy = TcpProxy("127.0.0.1", redis.port)
    try:
        yield proxy, redis
    finally:
        proxy.latency = 0.0
        proxy.close()
        redis.stop()


def warm_up(ext: Any) -> None:
    """Until every check answers in time (first connections through the proxy, a busy machine)."""
    wait_until(lambda: run_health_checks(ext).status == "healthy", timeout=60, message="a healthy report")


def slow_config(**extra: Any) -> dict[str, Any]:
    return dict(NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT=CHECK_TIMEOUT, NOTIFY_EMERGENCY_CANARY_TIMEOUT=CHECK_TIMEOUT,
                NOTIFY_EMERGENCY_HEALTH_ANSWER_TIMEOUT=10 * LATENCY, **extra)


@pytest.mark.postgres
def test_a_slow_database_is_overload_at_level_3_and_a_cut_one_is_still_level_1(proxied_database, make_app):
    proxy, url = proxied_database
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=url, **slow_config())
    ext = ext_of(app)
    warm_up(ext)

    proxy.latency = LATENCY
    report = run_health_checks(ext)
    database = report.checks["database"]
    assert database.status == "degraded", database
    overload = database.detail["overload"]
    assert overload["answered"] is True and overload["timeout"].startswith("timeout")
    assert overload["answer_ms"] >= LATENCY * 1000  # it did answer, after its deadline
    assert overload["deadline_ms"] == CHECK_TIMEOUT * 1000
    assert report.status != "critical"
    finding = classify(report)
    assert finding is not None and (finding.failure_type, finding.level) == ("overload", 3), finding
    assert finding.evidence["check"] == "database"
    assert "the database is overloaded, not unreachable" in finding.reason
    assert finding.evidence["detail"]["overload"]["by"] in ("the check's own late answer",
                                                            "a fresh connection's first reply")
    assert not any(f["level"] < 3 for f in finding.evidence["other_findings"]), finding.evidence

    proxy.latency = 0.0
    # the slow check's run has ended (on a loaded machine it can outlast its report): the next
    # one runs, instead of being refused as still hung
    warm_up(ext)
    proxy.cut()
    try:
        report = run_health_checks(ext)
        database = report.checks["database"]
        assert database.status == "failed" and "sqlalchemy.exc.DBAPIError" in database.error_types, database
        assert "overload" not in database.detail
        finding = classify(report)
        assert (finding.failure_type, finding.level) == ("database_persistence", 1)
        assert report.status == "critical"
    finally:
        proxy.open()  # the tables are dropped through it afterwards


@pytest.mark.postgres
def test_a_database_that_accepts_but_never_answers_is_unreachable(proxied_database, make_app):
    proxy, url = proxied_database
    app, _ = make_app(SQLALCHEMY_DATABASE_URI=url, **dict(slow_config(), NOTIFY_EMERGENCY_HEALTH_ANSWER_TIMEOUT=1.0))
    ext = ext_of(app)
    warm_up(ext)

    proxy.latency = 600.0  # connections are accepted; no reply comes within any deadline
    try:
        report = run_health_checks(ext)
        database = report.checks["database"]
        assert database.status == "failed" and database.error_type == "CheckTimeout"
        assert database.detail["answer_probe"]["answered"] is False
        assert (classify(report).failure_type, classify(report).level) == ("database_persistence", 1)
    finally:
        proxy.latency = 0.0
        proxy.cut()  # the held-back replies go nowhere: every connection is reset
        proxy.open()
        ext.engine.dispose()


def test_a_slow_redis_is_overload_not_a_listener_failure(proxied_redis, make_app):
    proxy, _ = proxied_redis
    url = f"redis://127.0.0.1:{proxy.port}/0"
    app, _ = make_app(NOTIFY_EMERGENCY_REDIS_URL=url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX="ne-slow",
                      SOCKETIO_MESSAGE_QUEUE=url, **slow_config())
    ext = ext_of(app)
    warm_up(ext)

    proxy.latency = LATENCY
    report = run_health_checks(ext)
    redis_check = report.checks["redis"]
    assert redis_check.status == "degraded", redis_check
    assert redis_check.detail["overload"]["answered"] is True
    # the canary through the same slow Redis arrives late: overload too, not a dead queue
    realtime = report.checks["realtime"]
    assert realtime.status == "degraded", realtime
    assert realtime.detail["overload"]["answered"] is True
    assert report.status != "critical"
    finding = classify(report)
    assert (finding.failure_type, finding.level) == ("overload", 3), finding
    assert {f["failure_type"] for f in finding.evidence["other_findings"]} <= {"overload", "shared_state"}
    assert all(f["level"] >= 3 for f in finding.evidence["other_findings"])


def test_a_cut_redis_is_still_the_failure_it_was(proxied_redis, make_app):
    proxy, _ = proxied_redis
    url = f"redis://127.0.0.1:{proxy.port}/0"
    app, _ = make_app(NOTIFY_EMERGENCY_REDIS_URL=url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX="ne-cut",
                      SOCKETIO_MESSAGE_QUEUE=url, **slow_config())
    ext = ext_of(app)
    warm_up(ext)

    proxy.cut()
    report = run_health_checks(ext)
    assert report.checks["redis"].status == "failed"
    assert "overload" not in report.checks["redis"].detail
    assert report.checks["realtime"].status == "failed"
    finding = classify(report)
    assert (finding.failure_type, finding.level) == ("realtime_connection", 1)
    assert any(f["failure_type"] == "shared_state" and f["level"] == 3 for f in finding.evidence["other_findings"])


class SocketIOErrors(logging.Handler):
    """What python-socketio's server logs at ERROR (its queue listener's back-off among it)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def flood(channel: str, url: str, count: int) -> None:
    """Another worker's emits, ``count`` of them at once, to every socket of namespace "/":
    published from a process of its own, as fast as Redis takes them."""
    code = (f"import json, redis\n"
            f"r = redis.Redis.from_url({url!r}); pipe = r.pipeline(transaction=False)\n"
            f"for i in range({count}):\n"
            f"    pipe.publish({channel!r}, json.dumps({{'method': 'emit', 'event': 'flood', 'data': [i],"
            f" 'binary': False, 'namespace': '/', 'room': None, 'skip_sid': None,"
            f" 'callback': None, 'host_id': 'another-worker'}}))\n"
            f"pipe.execute()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_a_queue_listener_behind_a_backlog_is_overload_and_one_asleep_in_its_backoff_is_not(make_app):
    """Served for real, with open sockets, so this worker's Socket.IO queue listener runs. Another
    worker's flood of emits puts it seconds behind: the canary's last stage (a packet this
    listener must hand back) runs past every deadline, yet the queue replies and the listener is
    busy, so real time is overloaded (level 3), not down. After a queue outage the same listener
    sleeps in its reconnect back-off while the queue replies again: that stays an outage."""
    import socketio as python_socketio
    from werkzeug.serving import make_server

    queue = PrivateRedis()
    errors = SocketIOErrors()
    logging.getLogger("socketio.server").addHandler(errors)
    app, _ = make_app(SOCKETIO_MESSAGE_QUEUE=queue.url, NOTIFY_EMERGENCY_HEALTH_CHECK_TIMEOUT=0.2,
                      NOTIFY_EMERGENCY_CANARY_TIMEOUT=0.2, NOTIFY_EMERGENCY_HEALTH_ANSWER_TIMEOUT=0.5)
    ext = ext_of(app)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sockets = [python_socketio.Client() for _ in range(5)]
    try:
        for client in sockets:  # each of the flood's emits is written to every one of them
            client.connect(f"http://127.0.0.1:{server.server_port}", transports=["websocket"], wait_timeout=10)
        wait_until(lambda: run_health_checks(ext, only=["realtime"]).checks["realtime"].status == "ok",
                   timeout=30, message="the canary to pass through this worker's listener")

        flood(ext.socketio.server.manager.channel, queue.url, 60_000)
        report = run_health_checks(ext, only=["realtime"])
        realtime = report.checks["realtime"]
        assert realtime.status == "degraded", realtime
        overload = realtime.detail["overload"]
        assert overload["by"] == "the real-time path's own answer", overload
        assert "listener is awake" in realtime.detail["answer_probe"]["how"]
        finding = classify(report)
        assert (finding.failure_type, finding.level) == ("overload", 3), finding
        assert "the real-time check is overloaded, not unreachable" in finding.reason

        wait_until(lambda: run_health_checks(ext, only=["realtime"]).checks["realtime"].status == "ok",
                   timeout=60, message="the listener to work off the backlog")
        queue.kill()
        wait_until(lambda: any("retrying in 8 secs" in line for line in errors.lines), timeout=30,
                   message="the listener to back off for 8 s")
        queue.start()  # it answers at once; the listener sleeps on
        report = run_health_checks(ext, only=["realtime"])
        realtime = report.checks["realtime"]
        assert realtime.status == "failed", realtime
        assert "asleep in its reconnect back-off" in realtime.detail["answer_probe"]["error"]
        finding = classify(report)
        assert (finding.failure_type, finding.level) == ("realtime_connection", 1), finding
    finally:
        logging.getLogger("socketio.server").removeHandler(errors)
        for client in sockets:
            client.disconnect()
        server.shutdown()
        queue.stop()

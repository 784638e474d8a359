"""Benchmarks of detection and of the breaker.

* ``health_check_p95_ms``: the full health check (all five checks, the end-to-end canary
  through a Redis message queue, the shared-state ping), everything healthy on loopback
  (Redis on 127.0.0.1:6379, SQLite), p95 over many runs. Target: at most 50 ms.
* ``breaker_fast_fail_ratio``: ``send()`` with a hung primary ``notifier=`` (it sleeps past
  ``NOTIFIER_TIMEOUT``) and the breaker OPEN, against ``send()`` with a healthy notifier and
  the breaker closed. An open breaker must make a dead primary cost (almost) nothing.
  Target: at most 2.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import uuid
from typing import Any, Callable

from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_notify_emergency import NotifyEmergency

from .timing import Options, compare, progress

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
HEALTH_P95_TARGET_MS = 50.0
FAST_FAIL_TARGET = 2.0


def build_app(directory: str, *, redis_url: str | None = None, prefix: str | None = None,
              notifier: Callable[[str, dict[str, Any]], Any] | None = None,
              config: dict[str, Any] | None = None) -> Any:
    """A host app with users on SQLite; Redis state and a Redis Socket.IO queue if ``redis_url``."""
    os.makedirs(directory, exist_ok=True)
    app = Flask(f"bench_emergency_{uuid.uuid4().hex[:8]}", instance_path=os.path.join(directory, "instance"))
    app.config.update(SECRET_KEY="bench-secret",
                      SQLALCHEMY_DATABASE_URI="sqlite:///" + os.path.join(directory, "bench.sqlite"),
                      NOTIFY_EMERGENCY_MONITOR_ENABLED=False)
    if redis_url:
        app.config.update(NOTIFY_EMERGENCY_REDIS_URL=redis_url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=prefix)
    app.config.update(config or {})

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(app, model_class=Base)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "bench_user"
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True, nullable=False)

    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> Any:
        return db.session.get(User, int(user_id)) if user_id.isdigit() else None

    # a channel of our own: other users of the same Redis never see our canaries
    socketio = SocketIO(app, async_mode="threading", message_queue=redis_url,
                        channel=f"{prefix}-socketio" if redis_url else "flask-socketio")
    NotifyEmergency(app, db=db, socketio=None if notifier else socketio, notifier=notifier)
    with app.app_context():
        db.create_all()
        db.session.add_all([User(username=n) for n in ("admin", "alice", "bob")])
        db.session.commit()
    return app


def _close(app: Any, prefix: str | None = None) -> None:
    ext = app.extensions["notify_emergency"]
    ext.close()
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()
    if prefix:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def bench_health_check(options: Options) -> dict[str, Any]:
    """p50/p95 of a full health check, everything healthy on loopback."""
    import redis

    from flask_notify_emergency.detect.health import run_health_checks

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()  # fail early, with Redis's own error
    runs = options.pick(60, 300)
    prefix = f"ne-bench-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="ne-bench-health-") as directory:
        app = build_app(directory, redis_url=REDIS_URL, prefix=prefix)
        ext = app.extensions["notify_emergency"]
        try:
            samples: list[float] = []
            for n in range(runs + 5):  # the first few open connections
                start = time.perf_counter()
                report = run_health_checks(ext)
                elapsed = (time.perf_counter() - start) * 1000
                if report.status != "healthy":
                    raise RuntimeError(f"the health check is not healthy: {report.to_dict()}")
                if n >= 5:
                    samples.append(elapsed)
            canary = report.checks["realtime"].detail["canary"]
            if canary.get("path") != "redis queue" or not canary.get("verified"):
                raise RuntimeError(f"the canary did not go through the Redis queue: {canary}")
            progress(f"  health check: {len(samples)} runs")
        finally:
            _close(app, prefix)
    return {
        "health_check_p95_ms": round(statistics.quantiles(samples, n=100, method="inclusive")[94], 3),
        "health_check_p50_ms": round(statistics.median(samples), 3),
        "health_check_max_ms": round(max(samples), 3),
        "health_check_runs": len(samples),
        "targets": {"health_check_p95_ms": HEALTH_P95_TARGET_MS},
    }


def bench_breaker_fast_fail(options: Options) -> dict[str, Any]:
    """send() with a hung primary behind an OPEN breaker vs a healthy primary, breaker closed."""
    runs, iterations = options.pick(10, 30), options.pick(30, 60)
    timeout = 0.05
    hung_calls = [0]
    release = threading.Event()

    def healthy(user_id: str, payload: dict[str, Any]) -> bool:
        return True

    def hung(user_id: str, payload: dict[str, Any]) -> bool:
        hung_calls[0] += 1
        release.wait(timeout * 20)  # far past NOTIFIER_TIMEOUT
        return True

    config = {"NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT": timeout, "NOTIFY_EMERGENCY_BREAKER_OPEN_SECONDS": 3600.0}
    with tempfile.TemporaryDirectory(prefix="ne-bench-breaker-") as directory:
        good = build_app(os.path.join(directory, "good"), notifier=healthy, config=config)
        bad = build_app(os.path.join(directory, "bad"), notifier=hung, config=config)
        try:
            bad_ext = bad.extensions["notify_emergency"]
            bad_ext.breaker.trip()
            if bad_ext.breaker.current != "open":
                raise RuntimeError("the breaker did not open")

            def sends(app: Any) -> Callable[[int], None]:
                notify = app.extensions["notify_emergency"]

                def batch(n: int) -> None:
                    with app.app_context():
                        for _ in range(n):
                            notify.dispatcher.send("2", "Build finished", "Your build is green.")
                return batch

            result = compare(sends(good), sends(bad), runs=runs, iterations=iterations, label="breaker")
            if hung_calls[0]:
                raise RuntimeError(f"the hung notifier was called {hung_calls[0]} times through an open breaker")
        finally:
            release.set()
            _close(good)
            _close(bad)
    return result.report("breaker_fast_fail_ratio", "breaker_send", FAST_FAIL_TARGET)


BENCHMARKS = [
    ("health_check_p95_ms", bench_health_check),
    ("breaker_fast_fail_ratio", bench_breaker_fast_fail),
]


if __name__ == "__main__":  # pragma: no cover - ``python -m bench.emergency`` for a quick look
    import json

    out: dict[str, Any] = {"targets": {}}
    for _, fn in BENCHMARKS:
        result = fn(Options(quick=True))
        out["targets"].update(result.pop("targets", {}))
        out.update(result)
    print(json.dumps(out, indent=1))

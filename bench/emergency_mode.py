"""How fast a mode switch reaches another process (Redis backend).

``mode_propagation_p50_ms`` / ``mode_propagation_p99_ms``: from the call of
``control.set_mode()`` in this process (database write, then publish) to the moment a
second process's state cache has applied the new mode (its state listener fires), over many
switches alternating emergency/normal. Both processes read ``time.monotonic()``, which on
Linux is the one system-wide ``CLOCK_MONOTONIC``, so the two timestamps compare directly.

The second process is this module run as ``python -m bench.emergency_mode --observe``;
both build the same minimal app on one SQLite file and one Redis key prefix. Redis comes
from ``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

P99_TARGET_MS = 100.0
WARMUP = 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def build_app(database_uri: str, redis_url: str, prefix: str) -> Any:
    """A minimal host: Flask-SQLAlchemy on ``database_uri`` and the extension on Redis."""
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import DeclarativeBase

    from flask_notify_emergency import NotifyEmergency
    from flask_notify_emergency.models import models_for

    app = Flask(f"bench_mode_{uuid.uuid4().hex[:8]}")
    app.config.update(SECRET_KEY="bench", SQLALCHEMY_DATABASE_URI=database_uri,
                      NOTIFY_EMERGENCY_REDIS_URL=redis_url, NOTIFY_EMERGENCY_REDIS_KEY_PREFIX=prefix,
                      NOTIFY_EMERGENCY_MONITOR_ENABLED=False)

    class Base(DeclarativeBase):  # one per app
        pass

    db = SQLAlchemy(app, model_class=Base)
    models_for(db)
    with app.app_context():
        db.create_all()  # before the extension's state first reads its tables
    NotifyEmergency(app, db=db)
    return app


def observe() -> None:
    """The second process: print ``<mode> <monotonic time>`` each time the mode changes."""
    app = build_app(os.environ["BENCH_DATABASE_URI"], os.environ["BENCH_REDIS_URL"], os.environ["BENCH_PREFIX"])
    ext = app.extensions["notify_emergency"]
    out = sys.stdout

    def seen(key: str, value: Any) -> None:
        if key == "mode":
            out.write(f"{value} {time.monotonic():.9f}\n")
            out.flush()

    ext.state.on_change(seen)
    out.write("ready\n")
    out.flush()
    sys.stdin.read()  # until the benchmark closes our stdin
    ext.close()


def _reader(stream: Any, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line.strip())


def _percentile(samples: list[float], pct: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


def bench_mode_propagation(options: Any) -> dict[str, Any]:
    """Mode switch -> seen by another process, p50 and p99 over many switches."""
    import redis

    from .timing import progress

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()  # fail early, with Redis's own error
    samples_wanted = options.pick(40, 400)
    prefix = f"ne-bench-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="ne-bench-mode-") as directory:
        database_uri = "sqlite:///" + os.path.join(directory, "mode.sqlite")
        app = build_app(database_uri, REDIS_URL, prefix)
        ext = app.extensions["notify_emergency"]
        env = dict(os.environ, BENCH_DATABASE_URI=database_uri, BENCH_REDIS_URL=REDIS_URL, BENCH_PREFIX=prefix,
                   PYTHONPATH=ROOT)
        observer = subprocess.Popen([sys.executable, "-m", "bench.emergency_mode", "--observe"], cwd=ROOT, env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_reader, args=(observer.stdout, lines), daemon=True).start()
        samples: list[float] = []
        try:
            if lines.get(timeout=60) != "ready":
                raise RuntimeError("the observer process did not start")
            for n in range(samples_wanted + WARMUP):  # the first switches warm connections and caches up
                mode = "emergency" if n % 2 == 0 else "normal"
                started = time.monotonic()
                ext.control.set_mode(mode, "bench")
                while True:
                    seen_mode, _, at = lines.get(timeout=10).partition(" ")
                    if seen_mode == mode:
                        break
                if n >= WARMUP:
                    samples.append((float(at) - started) * 1000)
                time.sleep(0.005)  # let the observer's print finish before the next switch
            progress(f"  mode propagation: {len(samples)} switches")
        finally:
            if observer.stdin:
                observer.stdin.close()
            try:
                observer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                observer.kill()
                observer.wait()
            ext.close()
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)
            client.close()
    return {
        "mode_propagation_p50_ms": round(statistics.median(samples), 3),
        "mode_propagation_p99_ms": round(_percentile(samples, 99), 3),
        "mode_propagation_max_ms": round(max(samples), 3),
        "mode_propagation_samples": len(samples),
        "targets": {"mode_propagation_p99_ms": P99_TARGET_MS},
    }


BENCHMARKS = [
    ("mode_propagation_p99_ms", bench_mode_propagation),
]


if __name__ == "__main__":
    if sys.argv[1:] == ["--observe"]:
        observe()
    else:
        import json

        from .timing import Options

        print(json.dumps(bench_mode_propagation(Options(quick="--quick" in sys.argv[1:]))))

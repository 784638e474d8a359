"""RedisState against the real Redis: workers share mode and pending markers; when Redis goes
away delivery continues from the database, and when it comes back the shared state is restored."""

from __future__ import annotations

import logging
import shutil
import subprocess
from typing import Any, Callable, Iterator

import pytest
import redis
import requests

from tests.conftest import login, user_id
from tests.support.apps import ServedApp
from tests.support.pages import BANNERS_URL, flashes, notification_rows
from tests.support.services import free_port, port_open, wait_until

FAST = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5}


def served_mode(app: ServedApp) -> str:
    return str(requests.get(app.url + BANNERS_URL, timeout=5).json()["mode"])


def served_login(app: ServedApp, name: str) -> requests.Session:
    session = requests.Session()
    response = session.post(f"{app.url}/login", data={"username": name, "password": name},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302
    return session


def served_flashes(app: ServedApp, session: requests.Session) -> list[str]:
    return flashes(session.get(app.url + "/", timeout=10).text)


@pytest.fixture
def cluster(tmp_path: Any, redis_url: str, redis_prefix: str,
            make_app: Callable[..., tuple[Any, Any]]) -> Iterator[tuple[Any, ServedApp, ServedApp]]:
    """Two served workers and an app in the test process, on one database and one Redis.

    A long database refresh interval: whatever the workers learn quickly, they learn
    through Redis."""
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'cluster.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 60.0, **FAST}
    local, _ = make_app(**config)
    first = ServedApp(free_port(), config)
    try:
        second = ServedApp(free_port(), config)
    except BaseException:
        first.stop()
        raise
    try:
        yield local, first, second
    finally:
        first.stop()
        second.stop()


def test_workers_share_the_mode_through_redis(cluster):
    local, first, second = cluster
    ext = local.extensions["notify_emergency"]
    assert ext.state.backend == "redis" and ext.state.healthy
    assert served_mode(first) == served_mode(second) == "normal"

    with local.app_context():
        ext.control.set_mode("emergency", "test")
    for worker in (first, second):
        wait_until(lambda: served_mode(worker) == "emergency", timeout=10, interval=0.05,
                   message=f"worker on port {worker.port} to see emergency mode")
    with local.app_context():
        ext.control.set_mode("normal", "test")
    for worker in (first, second):
        wait_until(lambda: served_mode(worker) == "normal", timeout=10, interval=0.05,
                   message=f"worker on port {worker.port} to see normal mode again")


def test_workers_share_pending_markers_and_flash_once(cluster):
    local, first, second = cluster
    notify = local.extensions["demo"]["notify"]
    alice_first, alice_second = served_login(first, "alice"), served_login(second, "alice")
    with local.app_context():
        notify.send(user_id(local, "alice"), "Invoice", "Paid, thank you.")

    # the marker set by the test process reaches the worker through Redis, not a DB refresh
    shown = wait_until(lambda: served_flashes(second, alice_second), timeout=10, interval=0.1,
                       message="the flash on the second worker")
    assert shown == ["Invoice: Paid, thank you."]
    assert served_flashes(first, alice_first) == []
    assert served_flashes(second, alice_second) == []
    assert [(r["delivered"], r["channel"]) for r in notification_rows(local)] == [(True, "flash")]


def test_a_worker_started_during_an_emergency_starts_in_emergency_mode(make_app, tmp_path, redis_url,
                                                                       redis_prefix):
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'late.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 60.0, **FAST}
    early, _ = make_app(**config)
    with early.app_context():
        early.extensions["notify_emergency"].control.set_mode("legacy", "test")

    late, _ = make_app(**config)
    ext = late.extensions["notify_emergency"]
    assert ext.state.healthy
    assert ext.control.mode == "legacy"


# -- Redis unreachable ---------------------------------------------------------------------------

def test_with_redis_unreachable_send_stores_and_the_user_gets_the_flash(make_app, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="flask_notify_emergency")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'noredis.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": dead, "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5, **FAST}
    sender, _ = make_app(**config)
    other, _ = make_app(**config)  # a second worker: learns only from the database now
    assert not sender.extensions["notify_emergency"].state.healthy
    assert any("is unreachable" in r.getMessage() and "delivery continues from the database" in r.getMessage()
               for r in caplog.records)

    alice_here, alice_there = sender.test_client(), other.test_client()
    login(alice_here, "alice")
    login(alice_there, "alice")
    with sender.app_context():
        nid = sender.extensions["demo"]["notify"].send(user_id(sender, "alice"), "Order shipped", "Today.")
    assert [r["id"] for r in notification_rows(sender)] == [nid]

    shown = wait_until(lambda: flashes(alice_there.get("/").get_data(as_text=True)), timeout=10, interval=0.1,
                       message="the other worker to flash it after its database refresh")
    assert shown == ["Order shipped: Today."]
    assert flashes(alice_here.get("/").get_data(as_text=True)) == []
    alice_there.get("/")  # the browser that showed it confirms it with its next request
    assert [(r["delivered"], r["channel"]) for r in notification_rows(sender)] == [(True, "flash")]


class PrivateRedis:
    """A redis-server of our own on a free port, to stop and start during a test."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout=10, message="the private redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_going_away_and_coming_back(make_app, tmp_path, private_redis, caplog):
    caplog.set_level(logging.WARNING, logger="flask_notify_emergency")
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'flaky.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": private_redis.url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": "ne",
              "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5, **FAST}
    one, _ = make_app(**config)
    two, _ = make_app(**config)
    ext_one, ext_two = one.extensions["notify_emergency"], two.extensions["notify_emergency"]
    assert ext_one.state.healthy and ext_two.state.healthy
    alice = two.test_client()
    login(alice, "alice")
    notify = one.extensions["demo"]["notify"]

    private_redis.stop()
    for ext in (ext_one, ext_two):
        wait_until(lambda: not ext.state.healthy, timeout=10, message="the workers to notice Redis is gone")
    assert any("is unreachable" in r.getMessage() for r in caplog.records)

    with one.app_context():
        notify.send(user_id(one, "alice"), "While down", "Still here.")
        notify.send(user_id(one, "bob"), "For later", "Bob is away.")
        ext_one.control.set_mode("emergency", "test")
    assert len(notification_rows(one)) == 2
    shown = wait_until(lambda: flashes(alice.get("/").get_data(as_text=True)), timeout=10, interval=0.1,
                       message="the flash through the database refresh")
    assert shown == ["While down: Still here."]
    alice.get("/")  # her next request confirms what the page showed
    wait_until(lambda: ext_two.control.mode == "emergency", timeout=10, message="mode through the database")

    private_redis.start()  # an empty Redis on the same port
    for ext in (ext_one, ext_two):
        wait_until(lambda: ext.state.healthy, timeout=15, interval=0.1, message="the workers to reconnect")
    assert any("is back; shared state restored" in r.getMessage() for r in caplog.records)
    # the pending marker of the notification waiting for bob is back in Redis, from the database
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert user_id(one, "bob").encode() in client.smembers("ne:pending")
    finally:
        client.close()

    # and changes spread through Redis again: refresh from the database is off while healthy
    with one.app_context():
        ext_one.control.set_mode("normal", "test")
    wait_until(lambda: ext_two.control.mode == "normal", timeout=10, message="mode through Redis again")
    assert not ext_two.state.needs_refresh()
    bob = two.test_client()
    login(bob, "bob")
    assert flashes(bob.get("/").get_data(as_text=True)) == ["For later: Bob is away."]
    bob.get("/")  # his next request confirms what the page showed
    assert all(r["delivered"] for r in notification_rows(one))

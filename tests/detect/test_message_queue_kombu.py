"""Flask-SocketIO's message queue on RabbitMQ (Kombu): the canary, the realtime check and
cluster-wide mode changes work end to end, and a broker that goes away is a realtime failure.

The shared RabbitMQ is never stopped: the apps reach it through a TCP proxy of the test's own,
which the test cuts. Each test uses a Socket.IO channel (a fanout exchange) of its own, so
other apps on the same broker never hear its packets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any, Iterator

import pytest
import requests
import socketio
import sqlalchemy as sa

from flask_notify_emergency.detect.classify import classify
from flask_notify_emergency.config import ConfigError
from flask_notify_emergency.detect.health import run_health_checks
from tests.support.apps import ROOT, ServedApp
from tests.support.outages import TcpProxy
from tests.support.pages import BANNERS_URL, NAMESPACE
from tests.support.services import free_port, wait_until


@pytest.fixture
def channel(rabbitmq_url: str) -> Iterator[str]:
    """A Socket.IO channel of our own: the name of the fanout exchange on the shared broker,
    deleted afterwards (Kombu's manager declares it, and nothing else removes it)."""
    import kombu

    name = f"ne-test-{uuid.uuid4().hex[:10]}"
    yield name
    with kombu.Connection(rabbitmq_url, connect_timeout=5) as connection:
        kombu.Exchange(name, channel=connection.default_channel).delete()


@pytest.fixture
def proxied_rabbitmq(rabbitmq_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """The machine's RabbitMQ behind a proxy the test owns and may cut."""
    proxy = TcpProxy("127.0.0.1", 5672)
    try:
        yield proxy, f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    finally:
        proxy.close()


def test_the_canary_comes_through_rabbitmq(make_app, rabbitmq_url, channel):
    app, _ = make_app(SOCKETIO_MESSAGE_QUEUE=rabbitmq_url, SOCKETIO_CHANNEL=channel)
    report = run_health_checks(app.extensions["notify_emergency"], only=["realtime"])
    realtime = report.checks["realtime"]
    assert realtime.status == "ok", realtime.to_dict()
    canary = realtime.detail["canary"]
    assert canary["path"] == "kombu queue" and canary["verified"] is True
    assert canary["listener"] == "not running in this process"  # no socket has started it yet


def test_a_cut_broker_fails_the_realtime_check_in_process(make_app, proxied_rabbitmq, channel):
    proxy, url = proxied_rabbitmq
    app, _ = make_app(SOCKETIO_MESSAGE_QUEUE=url, SOCKETIO_CHANNEL=channel,
                      NOTIFY_EMERGENCY_CANARY_TIMEOUT=1.0)
    ext = app.extensions["notify_emergency"]
    assert run_health_checks(ext, only=["realtime"]).checks["realtime"].status == "ok"

    proxy.cut()
    report = run_health_checks(ext)
    realtime = report.checks["realtime"]
    assert realtime.status == "failed"
    assert realtime.error_type not in (None, "CheckTimeout"), realtime.to_dict()  # refused, not hung
    assert report.status == "critical"
    assert classify(report).failure_type == "realtime_connection"


@pytest.mark.parametrize("queue", ["memory://", "filesystem://"])
def test_a_kombu_transport_the_canary_cannot_watch_is_refused_at_init_app(make_app, queue):
    with pytest.raises(ConfigError) as raised:
        make_app(SOCKETIO_MESSAGE_QUEUE=queue)
    message = str(raised.value)
    assert "KombuManager" in message and "not supported" in message
    assert "amqp://" in message and "redis://" in message  # says what to use instead


def test_a_host_own_pubsub_manager_is_refused_at_init_app(tmp_path):
    from flask import Flask
    from flask_socketio import SocketIO
    from flask_sqlalchemy import SQLAlchemy

    from flask_notify_emergency import NotifyEmergency

    class KafkaLikeManager(socketio.PubSubManager):
        name = "kafka-like"

        def _publish(self, data: Any) -> None:
            pass

        def _listen(self) -> Iterator[Any]:
            yield from ()

    app = Flask(__name__)
    app.config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'k.sqlite'}")
    db = SQLAlchemy(app)
    sio = SocketIO(app, async_mode="threading", client_manager=KafkaLikeManager())
    with pytest.raises(ConfigError, match="KafkaLikeManager is not supported"):
        NotifyEmergency(app, db=db, socketio=sio)
    assert "notify_emergency" not in app.extensions


# -- two served workers on RabbitMQ ---------------------------------------------------------
def run_cli(workdir: Any, *args: str) -> subprocess.CompletedProcess[str]:
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    return subprocess.run([flask if os.path.exists(flask) else "flask", "--app", "cli_app", "emergency", *args],
                          cwd=workdir, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=120)


def delivered_channel(engine: sa.engine.Engine, title: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT channel FROM notify_emergency_notification WHERE title = :t"),
                            {"t": title}).scalar()


def realtime_check(admin: requests.Session, server: ServedApp) -> dict[str, Any]:
    return dict(admin.get(server.url + "/emergency/api/health", timeout=30).json()["checks"]["realtime"])


@pytest.mark.slow
@pytest.mark.redis
def test_two_workers_on_rabbitmq_deliver_check_and_follow_the_mode(tmp_path, proxied_rabbitmq, redis_url,
                                                                    redis_prefix, channel):
    proxy, url = proxied_rabbitmq
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
              "SOCKETIO_MESSAGE_QUEUE": url, "SOCKETIO_CHANNEL": channel,
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_ACK_TIMEOUT": 10.0, "NOTIFY_EMERGENCY_CANARY_TIMEOUT": 2.0}
    (tmp_path / "cli_app.py").write_text("from tests.support.apps import build_example\n"
                                         f"app, socketio = build_example({config!r})\n")
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    client = socketio.Client(reconnection=False)
    notifications: list[dict[str, Any]] = []
    modes: list[str] = []

    @client.on("notify_emergency:notification", namespace=NAMESPACE)
    def on_notification(data: dict[str, Any]) -> None:  # what the browser script does: show, then ack
        notifications.append(data)
        client.emit("notify_emergency:ack", {"id": data["id"]}, namespace=NAMESPACE)

    @client.on("notify_emergency:mode", namespace=NAMESPACE)
    def on_mode(data: dict[str, Any]) -> None:
        modes.append(data["mode"])

    with ServedApp(free_port(), config) as a, ServedApp(free_port(), config) as b:
        try:
            with engine.connect() as conn:
                bob = str(conn.execute(sa.text("SELECT id FROM demo_user WHERE username = 'bob'")).scalar_one())
            bob_web = a.session_as("bob")
            cookie = "; ".join(f"{c.name}={c.value}" for c in bob_web.cookies)
            client.connect(a.url, namespaces=[NAMESPACE], headers={"Cookie": cookie}, wait_timeout=10)
            admin_a, admin_b = a.session_as("admin"), b.session_as("admin")

            # sent through worker B, carried by RabbitMQ to bob's socket on worker A, acknowledged
            admin_b.post(b.url + "/send", data={"user_id": bob, "title": "Through RabbitMQ", "message": "hi"},
                         timeout=10)
            wait_until(lambda: delivered_channel(engine, "Through RabbitMQ") == "realtime", timeout=15,
                       message="the real-time delivery across workers")
            assert [n["title"] for n in notifications] == ["Through RabbitMQ"]

            # the realtime check of a serving worker: the canary's emit and its own listener
            check = realtime_check(admin_a, a)
            assert check["status"] == "ok", check
            assert check["detail"]["canary"]["path"] == "kombu queue"
            assert check["detail"]["canary"]["listener"] == "hears the queue"

            # a mode change made by a third process reaches the socket held by worker A
            activated = run_cli(tmp_path, "activate-emergency", "--reason", "RabbitMQ drill", "--triggered-by", "t")
            assert activated.returncode == 0, activated.stdout + activated.stderr
            wait_until(lambda: "emergency" in modes, timeout=10, message="the mode push on bob's socket")
            for server in (a, b):
                assert requests.get(server.url + BANNERS_URL, timeout=5).json()["mode"] == "emergency"
            deactivated = run_cli(tmp_path, "deactivate-emergency", "--resolved-by", "t")
            assert deactivated.returncode == 0, deactivated.stdout + deactivated.stderr
            wait_until(lambda: modes[-1:] == ["normal"], timeout=10, message="the mode push back to normal")

            # the broker goes away: every worker's realtime check fails, and says why
            proxy.cut()
            for admin, server in ((admin_a, a), (admin_b, b)):
                check = realtime_check(admin, server)
                assert check["status"] == "failed", check
                assert check["error_type"] != "CheckTimeout", check

            # and comes back: the listener reconnects and the canary makes the whole trip again
            proxy.open()
            wait_until(lambda: realtime_check(admin_a, a)["status"] == "ok", timeout=60, interval=0.5,
                       message="worker A's realtime check to pass after RabbitMQ is back")
        finally:
            client.disconnect()
            engine.dispose()

"""The circuit breaker around a host's own ``notifier=`` callable, as a README user wires it:
Flask + Flask-SQLAlchemy + Flask-Login + ``NotifyEmergency(app, db=db, notifier=fn)``."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import pytest
from flask import Flask, get_flashed_messages
from flask_login import LoginManager, UserMixin, login_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_notify_emergency import NotifyEmergency, signals

BREAKER = {
    "NOTIFY_EMERGENCY_BREAKER_MIN_CALLS": 4,
    "NOTIFY_EMERGENCY_BREAKER_FAILURE_RATE": 0.5,
    "NOTIFY_EMERGENCY_BREAKER_OPEN_SECONDS": 0.5,
    "NOTIFY_EMERGENCY_BREAKER_PROBES": 2,
    "NOTIFY_EMERGENCY_BREAKER_CLOSE_AFTER": 2,
    "NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT": 0.2,
    # long, so that only the notifier's own answers move the breaker in these tests
    "NOTIFY_EMERGENCY_ACK_TIMEOUT": 30.0,
    "NOTIFY_EMERGENCY_SWEEP_SECONDS": 30.0,
    "NOTIFY_EMERGENCY_FLASH_BATCH_SIZE": 5,
}


class PushService:
    """The host's push sender: fails, hangs, delivers, or dispatches (ack comes later)."""

    def __init__(self) -> None:
        self.behaviour = "fail"
        self.calls: list[int] = []
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, user_id: str, payload: dict[str, Any]) -> bool | None:
        with self._lock:
            self.calls.append(int(payload["id"]))
        if self.behaviour == "fail":
            raise ConnectionError("push service refused the connection")
        if self.behaviour == "hang":
            self.release.wait(10)
            return True
        if self.behaviour == "dispatch":
            return None
        return True


class HostApp:
    """A small host app of our own: users, a page that shows flashes, our extension."""

    def __init__(self, db_path: str, notifier: Callable[..., Any], **config: Any) -> None:
        app = Flask(f"host{id(self)}")
        app.config.update(SECRET_KEY="host-secret", SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}",
                          NOTIFY_EMERGENCY_MONITOR_ENABLED=False, **config)

        class Base(DeclarativeBase):
            pass

        db = SQLAlchemy(app, model_class=Base)

        class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "host_user"
            id = db.Column(db.Integer, primary_key=True)
            name = db.Column(db.String(40), unique=True, nullable=False)

        login_manager = LoginManager(app)

        @login_manager.user_loader
        def load(uid: str) -> Any:
            return db.session.get(User, int(uid)) if uid.isdigit() else None

        self.notify = NotifyEmergency(app, db=db, notifier=notifier)
        with app.app_context():
            db.create_all()
            if User.query.filter_by(name="carol").first() is None:
                db.session.add(User(name="carol"))
                db.session.commit()
            self.user_id = str(User.query.filter_by(name="carol").one().id)

        @app.route("/login/<uid>")
        def login(uid: str) -> str:
            login_user(load(uid))
            return "ok"

        @app.route("/")
        def page() -> str:
            return "\n".join(get_flashed_messages())

        self.app = app
        self.ext = app.extensions["notify_emergency"]
        self.client = app.test_client()
        self.client.get(f"/login/{self.user_id}")

    def send(self, title: str) -> int:
        with self.app.app_context():
            return int(self.notify.send(self.user_id, title, "body"))

    def acknowledge(self, nid: int) -> bool:
        with self.app.app_context():
            return self.notify.acknowledge(nid, self.user_id)

    def flashed_titles(self) -> list[str]:
        """Every title flashed to the user over as many pages as it takes."""
        titles: list[str] = []
        for _ in range(50):
            page = self.client.get("/").get_data(as_text=True)
            if not page:
                return titles
            titles += [line.split(":", 1)[0] for line in page.splitlines()]
        raise AssertionError("flashes never ran out")

    def rows(self) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        t = self.ext.models.Notification.__table__
        with self.ext.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


@pytest.fixture
def push() -> Iterator[PushService]:
    service = PushService()
    yield service
    service.release.set()  # let hung calls finish


@pytest.fixture
def hosts(tmp_path: Any) -> Iterator[Callable[..., HostApp]]:
    built: list[HostApp] = []

    def factory(notifier: Callable[..., Any], db_name: str = "host.sqlite", **config: Any) -> HostApp:
        host = HostApp(str(tmp_path / db_name), notifier, **{**BREAKER, **config})
        built.append(host)
        return host

    yield factory
    for host in built:
        host.ext.close()


def wait_for_state(breaker: Any, wanted: str, timeout: float = 10.0) -> None:
    from tests.support.services import wait_until

    wait_until(lambda: breaker.current == wanted, timeout=timeout, interval=0.02,
               message=f"the breaker to be {wanted}")


def test_breaker_trips_only_at_the_failure_rate_over_the_minimum_calls(hosts, push):
    host = hosts(push)
    breaker = host.ext.breaker
    push.behaviour = "fail"
    for i in range(3):  # 100% failures, but fewer than BREAKER_MIN_CALLS
        host.send(f"early{i}")
        assert breaker.current == "closed"
    host.send("fourth")
    assert breaker.current == "open"
    assert len(push.calls) == 4
    assert sorted(host.flashed_titles()) == sorted(["early0", "early1", "early2", "fourth"])


def test_breaker_stays_closed_below_the_failure_rate(hosts, push):
    host = hosts(push)
    breaker = host.ext.breaker
    sequence = ["ok", "ok", "ok", "fail", "fail"]  # 2 of 5 failed: below 0.5
    for i, behaviour in enumerate(sequence):
        push.behaviour = behaviour
        host.send(f"n{i}")
        assert breaker.current == "closed", i
    push.behaviour = "fail"
    host.send("n5")  # 3 of 6 failed: at the rate
    assert breaker.current == "open"


def test_open_breaker_skips_the_primary_then_admits_exactly_the_probes_and_closes(hosts, push):
    host = hosts(push)
    breaker = host.ext.breaker
    changes: list[tuple[str, str]] = []
    reasons: dict[int, str] = {}

    def on_change(sender: Any, old: str, new: str, **_: Any) -> None:
        changes.append((old, new))

    def on_fallback(sender: Any, notification: dict[str, Any], reason: str, **_: Any) -> None:
        reasons[int(notification["id"])] = reason

    with signals.breaker_changed.connected_to(on_change, sender=host.app), \
            signals.notification_fallback.connected_to(on_fallback, sender=host.app):
        push.behaviour = "fail"
        for i in range(4):
            host.send(f"fail{i}")
        assert breaker.current == "open"

        skipped = host.send("while-open")
        assert len(push.calls) == 4  # the primary was not called
        assert reasons[skipped] == "breaker-open"

        wait_for_state(breaker, "half_open")
        push.behaviour = "dispatch"  # probes go out; their acks come later
        probes = [host.send(f"probe{i}") for i in range(4)]
        assert push.calls[4:] == probes[:2]  # exactly BREAKER_PROBES went through
        assert [reasons.get(n) for n in probes[2:]] == ["breaker-open", "breaker-open"]
        assert breaker.current == "half_open"

        assert host.acknowledge(probes[0])
        assert breaker.current == "half_open"  # one success of BREAKER_CLOSE_AFTER
        assert host.acknowledge(probes[1])
        assert breaker.current == "closed"

        push.behaviour = "ok"
        after = host.send("after")
        assert push.calls[-1] == after

    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    # nothing lost: what the primary did not deliver arrives by flash, once each
    flashed = host.flashed_titles()
    assert sorted(flashed) == sorted(["fail0", "fail1", "fail2", "fail3", "while-open", "probe2", "probe3"])
    channels = {r["title"]: r["channel"] for r in host.rows()}
    assert all(r["delivered"] for r in host.rows())
    assert [channels[t] for t in ("probe0", "probe1", "after")] == ["realtime"] * 3


def test_a_failed_probe_opens_the_breaker_again(hosts, push):
    host = hosts(push)
    breaker = host.ext.breaker
    for i in range(4):
        host.send(f"fail{i}")
    wait_for_state(breaker, "half_open")
    host.send("probe")  # still failing
    assert breaker.current == "open"
    assert sorted(host.flashed_titles()) == sorted(["fail0", "fail1", "fail2", "fail3", "probe"])


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_burst_in_half_open_lets_only_the_probes_through(hosts, push, backend, request):
    config: dict[str, Any] = {}
    if backend == "redis":
        config = {"NOTIFY_EMERGENCY_REDIS_URL": request.getfixturevalue("redis_url"),
                  "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": request.getfixturevalue("redis_prefix")}
    host = hosts(push, **config)
    for i in range(4):
        host.send(f"fail{i}")
    wait_for_state(host.ext.breaker, "half_open")
    push.behaviour = "dispatch"
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def burst(i: int) -> None:
        start.wait()
        try:
            host.send(f"burst{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len(push.calls) == 4 + 2  # BREAKER_PROBES, however many arrive at once


def test_a_hung_notifier_counts_as_a_failure_and_loses_nothing(hosts, push):
    host = hosts(push)
    failures: list[str] = []

    def on_failed(sender: Any, notification: dict[str, Any], error: str, **_: Any) -> None:
        failures.append(error)

    push.behaviour = "hang"
    with signals.notification_failed.connected_to(on_failed, sender=host.app):
        ids = [host.send(f"hung{i}") for i in range(4)]
    assert host.ext.breaker.current == "open"
    assert len(failures) == 4 and all("did not answer within 0.2s" in e for e in failures)
    assert sorted(host.flashed_titles()) == [f"hung{i}" for i in range(4)]
    assert [r["id"] for r in host.rows() if r["channel"] == "flash"] == ids


def test_breaker_state_is_shared_by_apps_on_the_same_redis(hosts, redis_url, redis_prefix):
    shared = {"NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix}
    push_a, push_b = PushService(), PushService()
    a = hosts(push_a, **shared)
    b = hosts(push_b, **shared)
    assert a.ext.state.backend == b.ext.state.backend == "redis"

    # the failure window is the cluster's: two failures in each app reach BREAKER_MIN_CALLS
    a.send("a0")
    a.send("a1")
    b.send("b0")
    assert a.ext.breaker.current == b.ext.breaker.current == "closed"
    b.send("b1")
    assert b.ext.breaker.current == "open"
    wait_for_state(a.ext.breaker, "open", timeout=5)

    a.send("a-skipped")
    assert len(push_a.calls) == 2  # app a skips its primary because app b tripped
    assert sorted(a.flashed_titles()) == ["a-skipped", "a0", "a1", "b0", "b1"]


def test_successes_written_later_still_count_in_every_workers_failure_rate(hosts, redis_url, redis_prefix):
    """A worker writes its successes to Redis in batches; none of them is missing from the rate
    it judges, and a failure writes them for the other workers too."""
    shared = {"NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix}
    push_a, push_b = PushService(), PushService()
    a = hosts(push_a, **shared)
    b = hosts(push_b, **shared)
    push_a.behaviour = "deliver"
    for i in range(6):
        a.send(f"ok{i}")  # delivered: six successes, most of them not written yet
    push_a.behaviour = "fail"
    for i in range(4):
        a.send(f"a-fail{i}")
        # 4 failures of 10 calls: under the rate of 0.5 only if all six successes count
        assert a.ext.breaker.current == "closed", f"tripped after {i + 1} failures"
    b.send("b-fail0")  # app b sees them too: 5 failures of 11 calls
    assert b.ext.breaker.current == "closed"
    b.send("b-fail1")  # 6 of 12: at the rate
    assert a.ext.breaker.current == "open"


def test_an_app_started_after_the_trip_sees_the_open_breaker(hosts, redis_url, redis_prefix):
    shared = {"NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_BREAKER_OPEN_SECONDS": 30.0}
    push_a, push_b = PushService(), PushService()
    a = hosts(push_a, **shared)
    for i in range(4):
        a.send(f"a{i}")
    assert a.ext.breaker.current == "open"

    late = hosts(push_b, **shared)  # a worker started (or restarted) later
    assert late.ext.breaker.current == "open"
    late.send("late")
    assert push_b.calls == []


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_racing_callers_at_the_end_of_the_open_period_get_only_the_probes(hosts, push, backend, request):
    config: dict[str, Any] = {}
    if backend == "redis":
        config = {"NOTIFY_EMERGENCY_REDIS_URL": request.getfixturevalue("redis_url"),
                  "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": request.getfixturevalue("redis_prefix")}
    host = hosts(push, NOTIFY_EMERGENCY_BREAKER_OPEN_SECONDS=0.05, **config)
    breaker = host.ext.breaker
    for round_ in range(12):
        breaker.trip()
        wait_for_state(breaker, "half_open")
        start = threading.Barrier(16)
        admitted: list[bool] = []

        def caller() -> None:
            start.wait()
            admitted.append(breaker.allow())

        threads = [threading.Thread(target=caller) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert admitted.count(True) == 2, f"round {round_}: {admitted}"

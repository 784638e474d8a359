"""The core benchmarks: the cost of ``send()``, of a page request, and of a broadcast.

* ``send_vs_baseline``: ``notify.send()`` to a connected user against what a host would
  write by hand: one ORM insert + commit of an equivalent row, then ``socketio.emit`` to
  the user's room.
* ``request_overhead``: a logged-in page request rendering the banners and the script tag
  (nothing pending) against the same app without the extension.
* ``broadcast_scaling``: ``notify.broadcast()`` plus the next page render for one user,
  with 100,000 users in the host's user table against 10 users.
"""

from __future__ import annotations

import tempfile
from typing import Any

import sqlalchemy as sa

from flask_notify_emergency.delivery.notifier import ACK_EVENT, EVENT
from flask_notify_emergency.models import utcnow

from .host import Host, build_host
from .timing import Batch, Options, compare

SEND_TARGET = 1.3
REQUEST_TARGET = 1.05
BROADCAST_TARGET = 1.5
BROADCAST_USERS = 100_000
BROADCAST_BASELINE_USERS = 10

#: Acknowledgements never time out during a run, so every send takes the real-time path
#: (the browser's acks are sent between batches, untimed, like a real client's).
NO_ACK_TIMEOUT = {"NOTIFY_EMERGENCY_ACK_TIMEOUT": 3600.0}


def _baseline_model(host: Host) -> Any:
    """A plain model of the host's own, with the columns a notification has."""
    db = host.db

    class BaselineNotification(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "bench_baseline_notification"
        id = sa.Column(sa.Integer, primary_key=True, autoincrement=True)
        user_id = sa.Column(sa.String(64), nullable=False, index=True)
        title = sa.Column(sa.String(500), nullable=False)
        message = sa.Column(sa.Text, nullable=False)
        priority = sa.Column(sa.String(8), nullable=False)
        category = sa.Column(sa.String(64), nullable=False)
        data = sa.Column(sa.JSON, nullable=True)
        action_url = sa.Column(sa.String(500), nullable=True)
        created_at = sa.Column(sa.DateTime, nullable=False)
        delivered = sa.Column(sa.Boolean, nullable=False, default=False)
        delivered_at = sa.Column(sa.DateTime, nullable=True)

    with host.app.app_context():
        BaselineNotification.__table__.create(db.engine)
    return BaselineNotification


def bench_send(options: Options) -> dict[str, Any]:
    """``notify.send()`` to a connected user vs insert + commit + emit by hand."""
    runs, iterations = options.pick(9, 21), options.pick(30, 100)
    with tempfile.TemporaryDirectory(prefix="ne-bench-send-") as tmp:
        host = build_host(tmp, config=NO_ACK_TIMEOUT)
        try:
            return _run_send(host, runs, iterations)
        finally:
            host.close()


def _run_send(host: Host, runs: int, iterations: int) -> dict[str, Any]:
    app, db, socketio, notify = host.app, host.db, host.socketio, host.notify
    assert notify is not None
    ext = app.extensions["notify_emergency"]
    namespace = ext.namespace
    uid = host.user_id("alice")
    room = ext.notifier.room(uid)
    Model = _baseline_model(host)
    sio = socketio.test_client(app, namespace=namespace, flask_test_client=host.login("alice"))
    if not (sio.is_connected(namespace) and ext.state.is_connected(uid)):
        raise RuntimeError("the Socket.IO test client did not connect as alice")
    title, message = "Caption ready", "Your image has alt text now."

    def baseline(n: int) -> None:
        for _ in range(n):
            row = Model(user_id=uid, title=title, message=message, priority="normal",
                        category="system", data=None, action_url=None, created_at=utcnow())
            db.session.add(row)
            db.session.flush()  # the id, for the payload, without a reload after commit
            payload = {"id": row.id, "user_id": uid, "title": title, "message": message,
                       "priority": "normal", "category": "system", "data": None,
                       "action_url": None, "created_at": row.created_at.isoformat() + "Z"}
            db.session.commit()
            socketio.emit(EVENT, payload, to=room, namespace=namespace)

    unacknowledged: list[int] = []

    def measured(n: int) -> None:
        for _ in range(n):
            unacknowledged.append(notify.send(uid, title, message))

    def between() -> None:
        # what the browser does: acknowledge what arrived (untimed), after checking it did
        arrived = {p["args"][0]["id"] for p in sio.get_received(namespace) if p["name"] == EVENT}
        missing = set(unacknowledged) - arrived
        if missing:
            raise RuntimeError(f"{len(missing)} notifications sent by notify.send() never reached the socket")
        if unacknowledged:
            sio.emit(ACK_EVENT, {"ids": unacknowledged}, namespace=namespace, callback=True)
            unacknowledged.clear()

    with app.app_context():
        result = compare(baseline, measured, runs=runs, iterations=iterations, between=between,
                         label="send")
        between()
        sent = db.session.scalar(sa.select(sa.func.count()).select_from(ext.models.Notification))
        undelivered = ext.store.backlog()[0]
    sio.disconnect(namespace)
    report = result.report("send_vs_baseline", "send", SEND_TARGET)
    report["send_rows_stored"] = int(sent or 0)
    report["send_rows_unacknowledged"] = int(undelivered)
    return report


def bench_request_overhead(options: Options) -> dict[str, Any]:
    """A logged-in page with banners and script tag vs the same app without the extension."""
    runs, iterations = options.pick(24, 80), options.pick(30, 50)
    with tempfile.TemporaryDirectory(prefix="ne-bench-page-") as tmp:
        plain = build_host(f"{tmp}/plain", extension=False)
        with_ext = build_host(f"{tmp}/ext")
        try:
            plain_client, ext_client = plain.login("alice"), with_ext.login("alice")
            page = ext_client.get("/").get_data(as_text=True)
            if "notify-emergency-settings" not in page or "notify-emergency-banners" not in page:
                raise RuntimeError("the page with the extension lacks its banners or script tag")
            if "notify-emergency" in plain_client.get("/").get_data(as_text=True):
                raise RuntimeError("the page without the extension mentions it")

            def requests_of(client: Any) -> Batch:
                def batch(n: int) -> None:
                    for _ in range(n):
                        response = client.get("/")
                        if response.status_code != 200:
                            raise RuntimeError(f"page request failed: {response.status_code}")
                return batch

            result = compare(requests_of(plain_client), requests_of(ext_client), runs=runs,
                             iterations=iterations, label="request")
        finally:
            plain.close()
            with_ext.close()
    return result.report("request_overhead", "request", REQUEST_TARGET)


def bench_broadcast_scaling(options: Options) -> dict[str, Any]:
    """One broadcast plus the next page for one user: 100,000 users vs 10 in the user table."""
    runs, iterations = options.pick(5, 15), options.pick(8, 20)
    with tempfile.TemporaryDirectory(prefix="ne-bench-broadcast-") as tmp:
        small = build_host(f"{tmp}/small")
        large = build_host(f"{tmp}/large")
        try:
            # build_host made 3 users; fill up to the counts compared
            small.add_users(BROADCAST_BASELINE_USERS - 3)
            large.add_users(BROADCAST_USERS - 3)
            for host, expected in ((small, BROADCAST_BASELINE_USERS), (large, BROADCAST_USERS)):
                if host.user_count() != expected:
                    raise RuntimeError(f"expected {expected} users, found {host.user_count()}")

            def no_banners() -> None:  # each batch starts from the same state
                _dismiss(small)
                _dismiss(large)

            # two warm-up rounds: the bulk insert leaves the disk busy for a while
            result = compare(_broadcasts(small), _broadcasts(large), runs=runs, iterations=iterations,
                             warmup=2, between=no_banners, label="broadcast")
        finally:
            small.close()
            large.close()
    report = result.report("broadcast_scaling", "broadcast", BROADCAST_TARGET)
    report["broadcast_users"] = BROADCAST_USERS
    report["broadcast_baseline_users"] = BROADCAST_BASELINE_USERS
    return report


def _broadcasts(host: Host) -> Batch:
    """``batch(n)``: n times, broadcast a banner and render alice's next page (with it)."""
    client = host.login("alice")
    notify = host.notify
    assert notify is not None
    app = host.app
    counter = [0]

    def batch(n: int) -> None:
        for _ in range(n):
            counter[0] += 1
            text = f"Maintenance window {counter[0]} starts at 22:00 UTC."
            with app.app_context():
                notify.broadcast(text, level="warning", title="Maintenance")
            page = client.get("/").get_data(as_text=True)
            if text not in page:
                raise RuntimeError("the broadcast banner is missing from the next page")
    return batch


def _dismiss(host: Host) -> None:
    """Dismiss every banner, so each batch starts with none (untimed)."""
    with host.app.app_context():
        ext = host.app.extensions["notify_emergency"]
        ext.store.dismiss_banner(None, "bench")
        ext.banners_changed("bench")


BENCHMARKS = [
    ("send_vs_baseline", bench_send),
    ("request_overhead", bench_request_overhead),
    ("broadcast_scaling", bench_broadcast_scaling),
]

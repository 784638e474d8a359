"""Background work starts on a worker's first real request, never in a CLI command."""

from __future__ import annotations

import datetime as dt

from flask_notify_emergency import signals
from flask_notify_emergency.models import utcnow
from tests.conftest import login, user_id
from tests.support.pages import flashes
from tests.support.services import wait_until


def _row_left_by_a_dead_worker(ext, uid: str) -> int:
    """A notification emitted by a worker that died before its acknowledgement deadline."""
    now = utcnow()
    return ext.store.create({
        "user_id": uid, "audience": "user", "title": "Orphaned", "message": "Its worker died.",
        "priority": "normal", "category": "system", "created_at": now, "delivered": False,
        "attempts": 1, "realtime_deadline": now - dt.timedelta(seconds=30)})


def test_the_sweeper_hands_a_dead_workers_rows_to_the_fallbacks_after_the_first_request(make_app):
    app, _ = make_app(NOTIFY_EMERGENCY_SWEEP_SECONDS=0.2, NOTIFY_EMERGENCY_ACK_TIMEOUT=0.2)
    ext = app.extensions["notify_emergency"]
    uid = user_id(app, "alice")
    handed: list[tuple[int, str]] = []

    @signals.notification_fallback.connect_via(app)
    def host_receiver(sender, notification, reason, **extra):
        handed.append((notification["id"], reason))

    with app.app_context():
        nid = _row_left_by_a_dead_worker(ext, uid)
    assert not ext.worker_start.started
    client = app.test_client()
    login(client, "alice")
    assert ext.worker_start.started
    wait_until(lambda: (nid, "ack-timeout") in handed, timeout=10,
               message="the sweep to hand the orphaned row to the fallbacks")
    page = client.get("/").get_data(as_text=True)
    assert flashes(page).count("Orphaned: Its worker died.") == 1


def test_cli_commands_start_no_background_work(make_app):
    app, _ = make_app()
    ext = app.extensions["notify_emergency"]
    result = app.test_cli_runner().invoke(args=["emergency", "status"])
    assert result.exit_code == 0, result.output
    assert not ext.worker_start.started

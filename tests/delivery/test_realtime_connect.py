"""What a fresh socket is told on connect."""

from __future__ import annotations

from tests.conftest import login, user_id

NS = "/notify-emergency"


def _events(socket_client):
    return [m["name"] for m in socket_client.get_received(NS)]


def test_a_user_with_waiting_notifications_is_told_to_claim_them_on_connect(example):
    app, socketio = example
    notify = app.extensions["demo"]["notify"]
    client = app.test_client()
    login(client, "alice")
    with app.app_context():
        notify.send(user_id(app, "alice"), "While you were away", "Sent before the socket opened.")
    sock = socketio.test_client(app, namespace=NS, flask_test_client=client)
    assert sock.is_connected(NS)
    assert "notify_emergency:pending" in _events(sock)


def test_a_user_with_nothing_waiting_is_not_told_anything(example):
    app, socketio = example
    client = app.test_client()
    login(client, "bob")
    sock = socketio.test_client(app, namespace=NS, flask_test_client=client)
    assert sock.is_connected(NS)
    assert "notify_emergency:pending" not in _events(sock)

"""The README's quick start, end to end through the test client."""

from __future__ import annotations

from tests.conftest import login, user_id


def test_offline_user_gets_a_flash_exactly_once(app, client):
    notify = app.extensions["demo"]["notify"]
    login(client, "alice")
    with app.app_context():
        notify.send(user_id(app, "alice"), "Caption ready", "Your image has alt text now.")
    first = client.get("/").get_data(as_text=True)
    second = client.get("/").get_data(as_text=True)
    assert first.count("Caption ready: Your image has alt text now.") == 1
    assert "Caption ready" not in second

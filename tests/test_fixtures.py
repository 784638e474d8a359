"""Why tests with several users build their own clients instead of pytest-flask's ``client``:
pytest-flask keeps one request context pushed for the whole test, so every request shares one
``g`` and Flask-Login's cached user (docs/testing.md). If pytest-flask stops doing that, the
first test fails and the advice in docs/testing.md can be relaxed."""

from __future__ import annotations

from tests.conftest import login


def test_with_pytest_flasks_app_a_second_client_inherits_the_first_ones_user(app, client):
    login(client, "alice")
    stranger = app.test_client()  # never logged in
    assert stranger.get("/").status_code == 200  # alice's cached user answered for it


def test_with_clients_of_our_own_each_has_only_its_own_user(example):
    app, _ = example
    alice = app.test_client()
    login(alice, "alice")
    stranger = app.test_client()
    response = stranger.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert alice.get("/").status_code == 200

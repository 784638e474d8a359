"""The page helpers ``notify_emergency_banners()`` / ``notify_emergency_scripts()``: what each
user sees stays right although the shipped partials' output is reused between pages."""

from __future__ import annotations

import os
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader

from flask_notify_emergency.extension import render_banners, render_scripts
from tests.conftest import login
from tests.support.pages import banner_ids, client_settings


def logged_in(app: Any, name: str) -> Any:
    client = app.test_client()
    login(client, name)
    return client


def test_each_session_gets_its_own_csrf_token_in_the_script_settings(example):
    app, _ = example
    alice, bob, alice_again = logged_in(app, "alice"), logged_in(app, "bob"), logged_in(app, "alice")
    tokens = {}
    for name, client in (("alice", alice), ("bob", bob), ("alice2", alice_again)):
        first = client_settings(client.get("/").get_data(as_text=True))
        second = client_settings(client.get("/").get_data(as_text=True))
        assert first == second, name  # stable within a session
        assert first["loggedIn"] is True and first["csrfToken"]
        tokens[name] = first["csrfToken"]
    assert len(set(tokens.values())) == 3  # never another session's token
    # and the token works: the poll endpoint accepts it, and refuses another session's
    assert alice.post("/emergency/api/notifications/poll",
                      headers={"X-CSRF-Token": tokens["alice"]}).status_code == 200
    assert alice.post("/emergency/api/notifications/poll",
                      headers={"X-CSRF-Token": tokens["bob"]}).status_code == 400


def test_anonymous_pages_carry_no_token_and_logged_in_pages_do(example):
    app, _ = example
    anonymous = client_settings(app.test_client().get("/login").get_data(as_text=True))
    assert anonymous["loggedIn"] is False and anonymous["csrfToken"] is None
    page = logged_in(app, "alice").get("/").get_data(as_text=True)
    assert client_settings(page)["csrfToken"]
    assert "notify-emergency-csrf-token-stand-in" not in page


def test_script_settings_follow_the_mode(app, client):
    login(client, "alice")
    ext = app.extensions["notify_emergency"]
    assert client_settings(client.get("/").get_data(as_text=True))["mode"] == "normal"
    with app.app_context():
        ext.control.set_mode("emergency", "test")
    page = client.get("/").get_data(as_text=True)
    assert client_settings(page)["mode"] == "emergency"
    assert 'data-mode="emergency"' in page  # the banners' emergency notice too
    with app.app_context():
        ext.control.set_mode("normal", "test")
    page = client.get("/").get_data(as_text=True)
    assert client_settings(page)["mode"] == "normal" and "data-mode=" not in page


def test_banners_appear_and_go_on_the_next_page(app, client):
    notify = app.extensions["demo"]["notify"]
    login(client, "alice")
    assert banner_ids(client.get("/").get_data(as_text=True)) == []
    with app.app_context():
        first = notify.broadcast("Maintenance tonight.")
    assert banner_ids(client.get("/").get_data(as_text=True)) == [first]
    with app.app_context():
        second = notify.broadcast("Maintenance moved to tomorrow.")
    page = client.get("/").get_data(as_text=True)
    assert banner_ids(page) == [second, first] and "moved to tomorrow" in page
    ext = app.extensions["notify_emergency"]
    with app.app_context():
        ext.store.dismiss_banner(first, "test")
        ext.banners_changed("test")
    assert banner_ids(client.get("/").get_data(as_text=True)) == [second]


def test_the_client_urls_follow_the_script_root(example):
    app, _ = example
    client = logged_in(app, "alice")
    plain = client_settings(client.get("/").get_data(as_text=True))
    mounted_page = client.get("/", environ_overrides={"SCRIPT_NAME": "/shop"}).get_data(as_text=True)
    mounted = client_settings(mounted_page)
    assert plain["pollUrl"] == "/emergency/api/notifications/poll"
    assert mounted["pollUrl"] == "/shop/emergency/api/notifications/poll"
    assert 'src="/shop/emergency/static/client.js"' in mounted_page
    again = client.get("/").get_data(as_text=True)
    assert client_settings(again)["pollUrl"] == plain["pollUrl"] and "/shop/" not in again


def test_a_host_override_of_the_partials_is_rendered_for_each_user(make_app, tmp_path):
    overrides = tmp_path / "overrides" / "notify_emergency"
    overrides.mkdir(parents=True)
    (overrides / "_banners.html").write_text(
        '<div id="host-banners">for {{ current_user.username }}: {{ banners|length }}</div>')
    (overrides / "_scripts.html").write_text(
        '<script id="host-scripts" data-user="{{ current_user.username }}" '
        'data-token="{{ settings.csrfToken }}" data-path="{{ request.path }}"></script>')
    app, _ = make_app()
    # the host's own templates come first, as a host's templates folder would
    app.jinja_loader = ChoiceLoader([FileSystemLoader(os.fspath(tmp_path / "overrides")), app.jinja_loader])
    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    for name, client in (("alice", alice), ("bob", bob), ("alice", alice)):
        page = client.get("/").get_data(as_text=True)
        assert f'<div id="host-banners">for {name}: 0</div>' in page
        assert f'data-user="{name}"' in page and 'data-path="/"' in page
        token = client_settings_token(page)
        assert token and token != "notify-emergency-csrf-token-stand-in"
    with app.app_context():
        app.extensions["demo"]["notify"].broadcast("One banner.")
    assert '<div id="host-banners">for bob: 1</div>' in bob.get("/").get_data(as_text=True)


def client_settings_token(page: str) -> str:
    marker = 'data-token="'
    start = page.index(marker) + len(marker)
    return page[start:page.index('"', start)]


def test_the_helpers_render_outside_a_page_template(example):
    app, _ = example
    ext = app.extensions["notify_emergency"]
    with app.app_context():
        bid = app.extensions["demo"]["notify"].broadcast("Called from Python.")
    with app.test_request_context("/"):
        assert banner_ids(str(render_banners(ext))) == [bid]
        html = str(render_scripts(ext))
    assert client_settings(html)["loggedIn"] is False

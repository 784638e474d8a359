"""Who may use which part of the blueprint: every route (read from ``app.url_map``, so a new
route cannot be forgotten) and every event of the admin Socket.IO namespace, for anonymous
visitors, logged-in users and admins; and CSRF on every POST."""

from __future__ import annotations

from typing import Any

import pytest

from flask_notify_emergency.views import admin_realtime
from tests.conftest import login
from tests.support.pages import csrf_from_page
from tests.support.services import wait_until

#: Endpoints anyone may use (no login): static files, the banners, the public status page.
PUBLIC = {"static", "banners", "status_page", "status_page_json", "livez", "readyz"}
#: Endpoints for logged-in users (their own notifications).
USERS = {"poll"}
#: Endpoints for logged-in users that need input (the ids a page confirms): refused without it.
USERS_WITH_INPUT = {"ack"}
#: Admin POSTs that need no input: without a body they act (and redirect or answer 200).
NO_INPUT = {"action_health", "api_health_run", "action_recover", "api_auto_recover"}
#: Admin or a bearer token: a scraper is told 401 (``WWW-Authenticate: Bearer``), not sent to a login page.
SCRAPED = {"metrics"}
#: Admin POSTs whose input is the id in the URL: the first dismisses, the second is refused.
BY_URL_ID = {"banner_dismiss", "api_banner_dismiss"}


def blueprint_routes(app: Any) -> list[tuple[str, str, Any]]:
    """(endpoint without the blueprint name, method, rule) of every route of the blueprint."""
    bp = app.extensions["notify_emergency"].blueprint_name
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(bp + "."):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                routes.append((rule.endpoint.split(".", 1)[1], method, rule))
    return routes


def url_for_rule(rule: Any, ids: dict[str, int]) -> str:
    values = {name: ids.get(name, 1) for name in rule.arguments}
    if "filename" in rule.arguments:
        values["filename"] = "dashboard.css"
    return rule.build(values, append_unknown=False)[1]


@pytest.fixture
def dashboard(example: tuple[Any, Any]) -> dict[str, Any]:
    """The example app with one event and one banner, and a client per role."""
    app, socketio = example
    ext = app.extensions["notify_emergency"]
    from flask_notify_emergency.respond import emergency

    with app.app_context():
        event = emergency.activate(ext, reason="matrix", triggered_by="test")
        emergency.deactivate(ext, resolved_by="test", force=True, reason="matrix done")
        banner = ext.dispatcher.broadcast("matrix banner", "info")
    clients = {"anonymous": app.test_client(), "user": app.test_client(), "admin": app.test_client()}
    login(clients["user"], "alice")
    login(clients["admin"], "admin")
    tokens = {role: csrf_from_page(clients[role]) for role in ("user", "admin")}
    return {"app": app, "socketio": socketio, "clients": clients, "tokens": tokens,
            "ids": {"event_id": event["id"], "banner_id": banner}}


def expected(role: str, endpoint: str, method: str, path: str) -> set[int]:
    api = "/api/" in path
    if endpoint in PUBLIC:
        return {200}
    if endpoint in USERS:
        return {401} if role == "anonymous" else {200}
    if endpoint in USERS_WITH_INPUT:
        return {401} if role == "anonymous" else {400}
    if role == "anonymous" and endpoint in SCRAPED:
        return {401}
    if role == "anonymous":
        return {401} if api else {302}
    if role == "user":
        return {403}
    if method == "GET":
        return {200}
    if endpoint in NO_INPUT:
        # acting without input is fine; 501 only where the service is not installed
        return {200, 501} if api else {302, 501}
    if endpoint in BY_URL_ID:
        return {200, 400} if api else {302, 400}
    return {400}  # every other admin POST needs input: refused, nothing changed


@pytest.mark.parametrize("role", ["anonymous", "user", "admin"])
def test_every_route_answers_each_role_as_it_should(dashboard: dict[str, Any], role: str) -> None:
    app, client = dashboard["app"], dashboard["clients"][role]
    routes = blueprint_routes(app)
    assert len(routes) > 20, "the dashboard's routes are registered"
    wrong = []
    for endpoint, method, rule in routes:
        path = url_for_rule(rule, dashboard["ids"])
        headers = {"X-CSRF-Token": dashboard["tokens"][role]} if role != "anonymous" else {}
        response = client.open(path, method=method, headers=headers)
        want = expected(role, endpoint, method, path)
        if response.status_code not in want:
            wrong.append(f"{method} {path} ({endpoint}): {response.status_code}, expected {sorted(want)}")
        if role == "anonymous" and response.status_code == 302:
            assert response.headers["Location"].startswith("/login?next="), path
    assert not wrong, "\n".join(wrong)


def test_every_post_without_the_csrf_token_is_refused(dashboard: dict[str, Any]) -> None:
    app = dashboard["app"]
    wrong = []
    for endpoint, method, rule in blueprint_routes(app):
        if method != "POST":
            continue
        role = "user" if endpoint in USERS else "admin"
        path = url_for_rule(rule, dashboard["ids"])
        body = {"reason": "no token", "enabled": "1", "confirm": "ROLLBACK", "message": "x", "level": "info"}
        response = dashboard["clients"][role].post(path, data=body)
        if response.status_code != 400:
            wrong.append(f"POST {path}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    ext = app.extensions["notify_emergency"]
    with app.app_context():
        assert ext.control.mode == "normal", "nothing was done without a token"
        assert not ext.control.paused().get("realtime")


@pytest.mark.parametrize("role", ["anonymous", "user"])
def test_admin_namespace_refuses_non_admins_at_connect(dashboard: dict[str, Any], role: str) -> None:
    app, socketio = dashboard["app"], dashboard["socketio"]
    ns = app.config["NOTIFY_EMERGENCY_ADMIN_NAMESPACE"]
    sio = socketio.test_client(app, namespace=ns, flask_test_client=dashboard["clients"][role])
    assert not sio.is_connected(ns)
    for event in admin_realtime.ADMIN_EVENTS:
        with pytest.raises(RuntimeError):  # not connected: there is nobody to talk to
            sio.emit(event, {"window": "1h"}, namespace=ns, callback=True)


def test_admin_namespace_answers_every_event_for_admins_and_pushes_changes(dashboard: dict[str, Any]) -> None:
    app, socketio = dashboard["app"], dashboard["socketio"]
    ns = app.config["NOTIFY_EMERGENCY_ADMIN_NAMESPACE"]
    sio = socketio.test_client(app, namespace=ns, flask_test_client=dashboard["clients"]["admin"])
    assert sio.is_connected(ns)
    for event in admin_realtime.ADMIN_EVENTS:
        reply = sio.emit(event, {"window": "1h"}, namespace=ns, callback=True)
        assert reply["ok"] is True, (event, reply)
        assert reply["overview"]["window"]["name"] == "1h"
        assert reply["overview"]["database"]["ok"] is True
    bad = sio.emit(admin_realtime.SUBSCRIBE_EVENT, {"window": "2h"}, namespace=ns, callback=True)
    assert bad["ok"] is False and "window must be one of" in bad["error"]

    sio.get_received(ns)
    admin = dashboard["clients"]["admin"]
    response = admin.post("/emergency/api/emergency/activate", json={"reason": "pushed?"},
                          headers={"X-CSRF-Token": dashboard["tokens"]["admin"]})
    assert response.status_code == 200

    def pushed_emergency() -> bool:
        for packet in sio.get_received(ns):
            if packet["name"] == admin_realtime.OVERVIEW_EVENT and packet["args"][0]["overview"]["mode"] == "emergency":
                return True
        return False

    wait_until(pushed_emergency, timeout=15, message="an overview push showing emergency mode")
    sio.disconnect(namespace=ns)

"""Nothing leaks: public banner data never says who posted a banner, and settings,
``diagnostics`` and a backup's redacted config show no credential in any form."""

from __future__ import annotations

import json
import tarfile

import pytest

from flask_notify_emergency.config import redact_url
from flask_notify_emergency.delivery import BANNER_EVENT
from tests.conftest import login
from tests.support.cli import invoke, invoke_json
from tests.support.pages import BANNERS_URL, NAMESPACE, csrf_from_page, poll, received

POSTER = "Mallory Poster (id 77)"


# -- who posted a banner -----------------------------------------------------------------------

def test_public_banner_data_never_names_who_posted_it(make_app):
    app, socketio = make_app()
    notify = app.extensions["demo"]["notify"]
    alice = app.test_client()
    login(alice, "alice")
    token = csrf_from_page(alice)
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=alice)
    assert sio.is_connected(NAMESPACE)
    received(sio, BANNER_EVENT)
    with app.app_context():
        bid = notify.broadcast("Maintenance tonight.", title="Heads up", created_by=POSTER)

    pushed = received(sio, BANNER_EVENT)
    assert [b["id"] for b in pushed] == [bid]
    public = {
        "socket push": json.dumps(pushed),
        "page": alice.get("/").get_data(as_text=True),
        "anonymous page": app.test_client().get("/login").get_data(as_text=True),
        "api/banners": app.test_client().get(BANNERS_URL).get_data(as_text=True),
        "poll": poll(alice, token).get_data(as_text=True),
    }
    for where, text in public.items():
        assert "Maintenance tonight." in text, where  # the banner is there...
        assert "Mallory" not in text and "created_by" not in text, f"{where} names the poster"
    sio.disconnect(NAMESPACE)

    admin = app.test_client()
    login(admin, "admin")  # ...and admins still see who posted it, on the dashboard
    listed = admin.get("/emergency/api/banners/admin").get_json()
    assert any(b["id"] == bid and b["created_by"] == POSTER for b in listed["banners"])


# -- credentials in settings, diagnostics and backups ---------------------------------------------------

SECRETS = ["gwpass1", "hookpath2", "querytok3", "listpass4", "discordtok5", "cmdpass6", "cmdtok7",
           "curlpass8", "bearer9", "envkey10", "urlinarg11", "ghp0token12abcdefghijklm", "apikey13"]
CONFIG = {
    "NOTIFY_EMERGENCY_SMS_GATEWAY_URL": "https://gw:gwpass1@sms.example/send?api_key=apikey13",
    "NOTIFY_EMERGENCY_ALERT_WEBHOOKS": [
        "https://hooks.slack.com/services/T0001/B0001/hookpath2",
        "https://alerts.example/in?token=querytok3&team=ops",
        "https://ops:listpass4@alerts.example/in",
        "https://discord.com/api/webhooks/123456/discordtok5",
        "https://ghp0token12abcdefghijklm@git.example/hooks",
    ],
    "NOTIFY_EMERGENCY_SERVICE_COMMANDS": {
        "restart-web": ["systemctl", "restart", "web"],
        "db-check": ["mysqladmin", "--password=cmdpass6", "ping"],
        "deploy": ["deploy", "--token", "cmdtok7", "ENV_API_KEY=envkey10"],
        "probe": ["curl", "-u", "ops:curlpass8", "-H", "Authorization: Bearer bearer9",
                  "https://u:urlinarg11@probe.example/"],
    },
}


def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{where} shows {leaked}"


def test_settings_diagnostics_and_backups_redact_every_credential_form(make_app, tmp_path):
    app, _ = make_app(NOTIFY_EMERGENCY_BACKUP_DIR=str(tmp_path / "backups"), **CONFIG)
    admin = app.test_client()
    login(admin, "admin")
    settings = admin.get("/emergency/api/settings").get_json()["settings"]
    assert_no_secret(json.dumps(settings), "api/settings")
    assert_no_secret(admin.get("/emergency/settings").get_data(as_text=True), "the settings page")
    code, diagnostics = invoke_json(app, "diagnostics")
    assert code == 0
    assert_no_secret(json.dumps(diagnostics), "diagnostics --json")
    assert_no_secret(invoke(app, "diagnostics").output, "diagnostics")
    code, backup = invoke_json(app, "create-backup")
    assert code == 0, backup
    with tarfile.open(backup["path"], "r:gz") as tar:
        member = tar.extractfile("config.redacted.json")
        assert member is not None
        stored = member.read().decode()
    assert_no_secret(stored, "the backup's config.redacted.json")

    # what is not a secret stays readable, so the settings still say where things go
    hooks = settings["NOTIFY_EMERGENCY_ALERT_WEBHOOKS"]
    assert hooks[0] == "https://hooks.slack.com/services/***"
    assert hooks[1] == "https://alerts.example/in?token=***&team=ops"
    assert hooks[2] == "https://ops:***@alerts.example/in"
    assert hooks[4] == "https://***@git.example/hooks"
    commands = settings["NOTIFY_EMERGENCY_SERVICE_COMMANDS"]
    assert commands["restart-web"] == ["systemctl", "restart", "web"]
    assert commands["probe"][:3] == ["curl", "-u", "ops:***"]
    assert settings["NOTIFY_EMERGENCY_SMS_GATEWAY_URL"] == "https://gw:***@sms.example/send?api_key=***"


@pytest.mark.parametrize("url,shown", [
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("postgresql://app:pw@db/x?sslmode=require&password=pw2", "postgresql://app:***@db/x?sslmode=require&password=***"),
    ("https://example.com/a/b?secret=s&page=2", "https://example.com/a/b?secret=***&page=2"),
    ("https://outlook.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x", "https://outlook.webhook.office.com/webhookb2/***"),
    ("https://example.com/plain/path", "https://example.com/plain/path"),
])
def test_a_url_is_shown_without_its_credentials(url, shown):
    assert redact_url(url) == shown

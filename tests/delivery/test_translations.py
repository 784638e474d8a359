"""What users read is translatable: the shipped catalogue is current, the German translation is
complete and compiled, and a host that uses Flask-Babel shows its users the banners, the
emergency notice, flashes, the client's texts and the status page in their language (English
without Flask-Babel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

from babel.messages.pofile import read_po
from babel.support import Translations

from flask_notify_emergency.delivery import i18n
from tests.conftest import login, user_id
from tests.support.apps import ROOT
from tests.support.pages import client_settings, flashes

POT = os.path.join(i18n.TRANSLATIONS_DIR, i18n.DOMAIN + ".pot")
GERMAN_PO = os.path.join(i18n.TRANSLATIONS_DIR, "de", "LC_MESSAGES", i18n.DOMAIN + ".po")
DE = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}


def msgids(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return {m.id: m for m in read_po(fh) if m.id}


def test_the_shipped_catalogue_holds_every_string_the_code_and_templates_mark(tmp_path):
    pybabel = shutil.which("pybabel", path=os.path.dirname(sys.executable))
    assert pybabel, "pybabel (Babel) is part of the test extras"
    fresh = tmp_path / "fresh.pot"
    subprocess.run([pybabel, "extract", "-F", "babel.cfg", "-k", "N_", "-k", "lazy_gettext",
                    "-o", str(fresh), "."], cwd=ROOT, check=True, capture_output=True)
    assert set(msgids(str(fresh))) == set(msgids(POT)), "run `make messages` to refresh the catalogue"
    assert "Live notifications are paused." in msgids(POT)


def test_the_german_translation_is_complete_and_compiled():
    expected = set(msgids(POT))
    german = msgids(GERMAN_PO)
    assert set(german) == expected, "run `make messages` to merge the catalogue into the .po"
    for msgid, message in german.items():
        assert message.string and "fuzzy" not in message.flags, f"untranslated: {msgid!r}"
    compiled = Translations.load(i18n.TRANSLATIONS_DIR, ["de"], i18n.DOMAIN)
    for msgid, message in german.items():
        assert compiled.gettext(msgid) == message.string, f"run `make translations`: {msgid!r} is stale in the .mo"
    assert i18n.available_languages() == ["de"]


def german_app(make_app: Any) -> Any:
    app, _ = make_app(DEMO_LANGUAGES=["en", "de"])
    return app


def set_public_status(app: Any, status: str, message: str) -> None:
    result = app.test_cli_runner().invoke(args=["emergency", "update-status-page", "--status", status,
                                                "--message", message])
    assert result.exit_code == 0, result.output


def test_a_german_user_reads_the_banners_notice_flash_and_client_texts_in_german(make_app):
    app = german_app(make_app)
    ext = app.extensions["notify_emergency"]
    notify = app.extensions["demo"]["notify"]
    with app.app_context():
        ext.control.set_mode("emergency", "test")
        notify.send(user_id(app, "alice"), "Caption ready", "Your image has alt text now.")
    set_public_status(app, "degraded", "Slow notifications.")

    german = app.test_client()
    login(german, "alice")
    page = german.get("/", headers=DE).get_data(as_text=True)
    assert '<html lang="de">' in page
    assert "Live-Benachrichtigungen sind angehalten." in page
    assert "innerhalb von Sekunden, solange diese Seite geöffnet ist" in page
    assert "Eingeschränkte Leistung" in page  # the status banner's title
    assert "Slow notifications." in page  # an operator's own text stays as written
    assert flashes(page) == ["Caption ready: Your image has alt text now."]
    strings = client_settings(page)["strings"]
    assert strings["dismiss"] == "Schließen" and strings["modePaused"] == "Live-Benachrichtigungen sind angehalten."
    assert strings["dismissTitled"] == "Schließen: {title}"

    # the same reused output is never served in the wrong language
    english = app.test_client()
    login(english, "bob")
    page = english.get("/", headers=EN).get_data(as_text=True)
    assert '<html lang="en">' in page and "Live notifications are paused." in page
    assert "Degraded performance" in page and "Live-Benachrichtigungen" not in page
    assert client_settings(page)["strings"]["dismiss"] == "Dismiss"
    again = german.get("/", headers=DE).get_data(as_text=True)
    assert "Live-Benachrichtigungen sind angehalten." in again

    polled = german.get("/emergency/api/banners", headers=DE).get_json()
    assert [b["title"] for b in polled["banners"]] == ["Eingeschränkte Leistung"]
    assert [b["title"] for b in english.get("/emergency/api/banners", headers=EN).get_json()["banners"]] \
        == ["Degraded performance"]


def test_the_status_page_speaks_the_visitors_language(make_app):
    app = german_app(make_app)
    set_public_status(app, "partial_outage", "Wir arbeiten daran.")
    client = app.test_client()
    html = client.get("/emergency/status-page", headers=DE)
    text = html.get_data(as_text=True)
    assert '<html lang="de">' in text and "<title>Dienststatus</title>" in text
    assert "Teilweise Störung" in text and "Aktualisiert" in text and "Erneut prüfen" in text
    assert "Accept-Language" in html.headers.get("Vary", "")
    assert client.get("/emergency/api/status-page", headers=DE).get_json()["label"] == "Teilweise Störung"
    english = client.get("/emergency/status-page", headers=EN).get_data(as_text=True)
    assert "Partial outage" in english and "Teilweise" not in english


def test_without_flask_babel_everything_stays_english(example):
    app, _ = example
    assert "babel" not in app.extensions
    ext = app.extensions["notify_emergency"]
    with app.app_context():
        ext.control.set_mode("legacy", "test")
    client = app.test_client()
    login(client, "alice")
    page = client.get("/", headers=DE).get_data(as_text=True)
    assert '<html lang="en">' in page
    assert "You will still get every notification: they appear here when you load a page." in page
    assert client_settings(page)["strings"]["dismiss"] == "Dismiss"
    assert "Service status" in client.get("/emergency/status-page", headers=DE).get_data(as_text=True)
    with app.test_request_context("/", headers=DE):
        assert i18n.gettext("Dismiss") == "Dismiss" and i18n.current_locale() is None
        assert str(i18n.lazy_gettext("Open")) == "Open"

"""Hostile text everywhere a person can put text: notification titles and messages, banners,
emergency reasons, a user's name. In a real Chromium nothing of it runs (no marker set, no
dialog, no script error) and every page shows it literally."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.apps import ServedApp, build_example
from tests.support.browser import DESKTOP, log_in
from tests.support.services import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAYLOADS = (
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1;alert(1)">',
    '<svg onload="window.__xss=1"></svg>',
    '<a href="javascript:window.__xss=1">click me</a>',
    '"><img src=x onerror=window.__xss=1>',
    "' onmouseover='window.__xss=1' x='",
    "</script><script>window.__xss=1</script>",
    '<iframe src="javascript:window.__xss=1"></iframe>',
    "{{7*7}} ${7*7} {% raw %}",
)
EVIL_NAME = '"><svg onload=window.__xss=1>'
LONG = 45_000


def seed(config: dict[str, Any]) -> dict[str, Any]:
    """Store the payloads the way users and admins would, before the server starts."""
    from flask_notify_emergency.communicate.status_page import set_dashboard_status
    from flask_notify_emergency.respond import emergency

    app, _ = build_example(config)
    demo = app.extensions["demo"]
    ext = app.extensions["notify_emergency"]
    with app.app_context():
        demo["db"].session.add(demo["User"](username=EVIL_NAME, password="evil", is_admin=True))
        demo["db"].session.commit()
        alice = str(demo["User"].query.filter_by(username="alice").one().id)
        for payload in PAYLOADS:
            demo["notify"].send(alice, payload, f"message {payload}")
        with pytest.raises(ValueError):  # a javascript: link is refused before it is stored
            demo["notify"].send(alice, "link", "x", action_url="javascript:window.__xss=1")
        actor = f"{EVIL_NAME} (id 4)"
        for payload in PAYLOADS[:4]:
            demo["notify"].broadcast(f"banner {payload}", level="warning", title=payload, created_by=actor)
        event = emergency.activate(ext, reason=" | ".join(PAYLOADS), triggered_by=actor, actor=actor, level=2)
        set_dashboard_status(ext, "investigating", f"team {PAYLOADS[1]}", actor)
        ext.close()
        demo["db"].engine.dispose()
    return {"event_id": event["id"], "notifications": len(PAYLOADS)}


class Watch:
    """What a page did that it must not: dialogs, script errors, the marker."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.add_init_script("delete window.__xss;")
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        url = (msg.location or {}).get("url", "")
        if msg.type == "error" and not url.endswith("favicon.ico"):
            self.errors.append(f"{msg.text} ({url})")

    def assert_clean(self, where: str) -> None:
        assert self.page.evaluate("typeof window.__xss") == "undefined", f"script ran on {where}"
        assert self.dialogs == [], f"dialog on {where}: {self.dialogs}"
        assert self.errors == [], f"script errors on {where}: {self.errors}"
        assert self.page.locator("iframe").count() == 0, f"an injected iframe on {where}"

    def text(self) -> str:
        return str(self.page.inner_text("body"))


def test_hostile_text_is_shown_literally_and_never_runs(browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'xss.sqlite'}",
              "NOTIFY_EMERGENCY_POLL_INTERVAL": 1.0, "NOTIFY_EMERGENCY_DASHBOARD_REFRESH_SECONDS": 1.0}
    writer_config = dict(config, TESTING=True, SECRET_KEY="test-secret", NOTIFY_EMERGENCY_MONITOR_ENABLED=False)
    seeded = seed(writer_config)
    with ServedApp(free_port(), config) as app:
        # the user: flashes on the first page, the rest by polling, banners on top
        user_ctx = browser.new_context(viewport=DESKTOP)
        alice = user_ctx.new_page()
        watch = Watch(alice)
        log_in(alice, app.url, "alice")  # lands on the home page, where they all must show
        alice.wait_for_function(
            "n => document.querySelectorAll('.flash, .notify-emergency-toast').length >= n",
            arg=seeded["notifications"], timeout=LONG)
        text = watch.text()
        for payload in PAYLOADS:
            assert payload in text, f"not shown literally to the user: {payload}"
            assert f"banner {payload}" in text or payload not in PAYLOADS[:4]
        assert "49" not in text
        watch.assert_clean("the user's page")
        user_ctx.close()

        # an admin whose very name is hostile, on every dashboard page
        admin_ctx = browser.new_context(viewport=DESKTOP)
        page = admin_ctx.new_page()
        watch = Watch(page)
        log_in(page, app.url, EVIL_NAME, "evil")
        assert EVIL_NAME in watch.text()
        watch.assert_clean("the example app's page")
        pages = {
            "/emergency/": PAYLOADS,
            "/emergency/events": PAYLOADS,
            f"/emergency/events/{seeded['event_id']}": PAYLOADS + (EVIL_NAME,),
            "/emergency/notifications": PAYLOADS,
            "/emergency/banners": PAYLOADS[:4] + (EVIL_NAME,),
        }
        for path, expected in pages.items():
            page.goto(app.url + path)
            text = watch.text()
            for payload in expected:
                assert payload in text, f"{path} does not show literally: {payload}"
            watch.assert_clean(path)

        # the live-rendered parts (current event, recent actions) after a hostile action
        page.goto(app.url + "/emergency/banners")
        page.fill("#ne-form-banner input[name=title]", PAYLOADS[1])
        page.fill("#ne-form-banner textarea[name=message]", PAYLOADS[0])
        page.click("#ne-form-banner button[type=submit]")
        page.goto(app.url + "/emergency/")
        expect(page.locator("#ne-live")).to_have_attribute("data-state", "live", timeout=LONG)
        expect(page.locator("#ne-recent-audit")).to_contain_text(EVIL_NAME, timeout=LONG)
        expect(page.locator("#ne-current-event")).to_contain_text(PAYLOADS[0])
        expect(page.locator("#ne-team-status")).to_contain_text(f"team {PAYLOADS[1]}")
        watch.assert_clean("the live overview")

        # a new team status (update-dashboard, from another process) reaches the open page live
        from flask_notify_emergency.communicate.status_page import set_dashboard_status

        writer, _ = build_example(writer_config)
        with writer.app_context():
            set_dashboard_status(writer.extensions["notify_emergency"], "recovering", f"team {PAYLOADS[2]}", "ops")
            writer.extensions["notify_emergency"].close()
            writer.extensions["demo"]["db"].engine.dispose()
        expect(page.locator("#ne-team-status section")).to_have_attribute("data-status", "recovering", timeout=LONG)
        expect(page.locator("#ne-team-status")).to_contain_text(f"team {PAYLOADS[2]}")
        expect(page.locator("#ne-team-status strong")).to_have_text("Recovering")
        watch.assert_clean("the live team status")
        admin_ctx.close()

"""The dashboard and the user's page in a real Chromium, against the example app served on
loopback behind a reverse proxy: live over Socket.IO, then with the Socket.IO path broken
for real at the proxy (first silenced, then refused), through polling.

(Killing Flask-SocketIO's message queue would not do here: python-socketio delivers emits
to clients of the same process before publishing them, so a one-process server keeps
working without its queue. A proxy that drops WebSockets is the failure a browser meets.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.apps import ServedApp, quick_config
from tests.support.browser import DESKTOP, PHONE, screenshot, sign_in
from tests.support.proxy import SocketBreakingProxy
from tests.support.services import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = 45_000  # ms: deadlines for things that happen in seconds, generous for a busy 2-core CI


def expect_text(page: Any, selector: str, text: str, timeout: int = LONG) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector).filter(has_text=text).first).to_be_visible(timeout=timeout)


def test_admin_acts_user_sees_it_live_and_through_polling_when_the_socket_path_breaks(
        browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path)) as served, SocketBreakingProxy(served.port) as app:
        admin_ctx = browser.new_context(viewport=DESKTOP)
        user_ctx = browser.new_context(viewport=DESKTOP)
        dash = sign_in(admin_ctx, app.url, "admin")
        dash.goto(app.url + "/emergency/")
        for metric in ("delivery.success_rate", "connections.connected_users", "database.latency_ms",
                       "events.count", "events.recovery_success_rate", "rollback.success_rate",
                       "health.score", "events.mttd_seconds", "events.mttr_seconds"):
            expect(dash.locator(f'[data-metric="{metric}"]').first).to_be_visible()
        expect(dash.locator("#ne-live")).to_have_attribute("data-state", "live", timeout=LONG)
        expect(dash.locator("#ne-chart svg")).to_be_visible()

        alice = sign_in(user_ctx, app.url, "alice")
        alice.wait_for_function("document.documentElement.dataset.notifyEmergencyChannel === 'live'", timeout=LONG)
        alice.evaluate("window.__sameDocument = true")

        # live: the admin activates emergency mode; alice's open page shows it without a reload
        dash.fill("#ne-form-activate input[name=reason]", "Socket queue unreachable")
        dash.select_option("#ne-form-activate select[name=level]", "2")
        dash.click("#ne-form-activate button[type=submit]")
        expect_text(dash, ".ne-flash", "Emergency mode is on")
        expect(dash.locator("#ne-current-event")).to_contain_text("Socket queue unreachable")
        expect(dash.locator("#ne-current-event")).to_contain_text("level 2 (high)")
        expect(alice.locator(".notify-emergency-mode")).to_be_visible(timeout=LONG)
        assert alice.evaluate("window.__sameDocument") is True, "alice's page was not reloaded"

        dash.fill("#ne-form-deactivate input[name=reason]", "queue restarted")
        dash.check("#ne-form-deactivate input[name=force]")
        dash.click("#ne-form-deactivate button[type=submit]")
        expect_text(dash, ".ne-flash", "Emergency mode is off")
        expect(alice.locator(".notify-emergency-mode")).to_have_count(0, timeout=LONG)

        # the Socket.IO path goes silent: sockets stay connected, nothing arrives on them
        app.silence()
        expect(dash.locator("#ne-live")).to_have_attribute("data-state", "polling", timeout=LONG)

        # a notification sent now still reaches alice, through polling
        sender = admin_ctx.new_page()
        sender.goto(app.url + "/")
        sender.select_option("select[name=user_id]", label="alice")
        sender.fill("input[name=title]", "After the queue died")
        sender.fill("textarea[name=message]", "This came by polling.")
        sender.click("form.inline button[type=submit]")
        toast = alice.locator(".notify-emergency-toast").filter(has_text="After the queue died")
        expect(toast).to_be_visible(timeout=LONG)
        assert toast.get_attribute("data-via") == "poll"
        assert alice.evaluate("window.__sameDocument") is True

        # then it refuses outright: sockets cut, reconnects answered 503
        app.refuse()
        alice.wait_for_function("document.documentElement.dataset.notifyEmergencyChannel === 'polling'",
                                timeout=LONG)

        # the dashboard keeps working while polling: data changed elsewhere shows up...
        status = sender.evaluate("""async () => {
            const s = JSON.parse(document.getElementById('notify-emergency-settings').textContent);
            const r = await fetch('/emergency/api/emergency/activate', {method: 'POST',
              headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrfToken},
              body: JSON.stringify({reason: 'activated from another tab', level: 3})});
            return r.status; }""")
        assert status == 200
        expect(dash.locator("#ne-current-event")).to_contain_text("activated from another tab", timeout=LONG)
        expect(dash.locator("#ne-live")).to_have_attribute("data-state", "polling")
        expect(alice.locator(".notify-emergency-mode")).to_be_visible(timeout=LONG)

        # ... and its forms still act: enable the fallback, post a banner
        dash.click("#ne-form-fallback-on button[type=submit]")
        expect_text(dash, ".ne-flash", "Fallback on")
        expect(dash.locator("#ne-live")).to_have_attribute("data-state", "polling", timeout=LONG)
        dash.goto(app.url + "/emergency/banners")
        dash.fill("#ne-form-banner input[name=title]", "Maintenance")
        dash.fill("#ne-form-banner textarea[name=message]", "Live updates are down; pages still refresh.")
        dash.click("#ne-form-banner button[type=submit]")
        expect_text(dash, ".ne-flash", "posted")
        expect(alice.locator("[data-banner-id]").filter(has_text="Live updates are down")).to_be_visible(timeout=LONG)

        # rollback, confirmed by typing the word; then restore
        dash.goto(app.url + "/emergency/rollback")
        expect(dash.locator("#ne-checklist")).to_be_visible()
        button = dash.locator("#ne-form-rollback button[type=submit]")
        dash.fill("#ne-form-rollback input[name=reason]", "queue lost, rolling back")
        dash.fill("#ne-form-rollback input[name=confirm]", "rollback")
        expect(button).to_be_disabled()
        dash.fill("#ne-form-rollback input[name=confirm]", "ROLLBACK")
        expect(button).to_be_enabled()
        button.click()
        expect_text(dash, ".ne-flash", "Rollback: done")
        expect(dash.locator("#ne-state [data-format=mode]")).to_have_text("mode: legacy", timeout=LONG)
        expect(alice.locator('.notify-emergency-mode[data-mode="legacy"]')).to_be_visible(timeout=LONG)
        dash.fill("#ne-form-restore input[name=reason]", "queue is back")
        dash.fill("#ne-form-restore input[name=confirm]", "RESTORE")
        dash.check("#ne-form-restore input[name=force]")
        dash.click("#ne-form-restore button[type=submit]")
        expect_text(dash, ".ne-flash", "Restore: done")
        admin_ctx.close()
        user_ctx.close()


def test_banners_by_level_and_the_dashboard_on_desktop_and_phone(browser: Any, tmp_path: Any) -> None:
    """Screenshots (``test-artifacts/``) of the user's page and the overview at two widths."""
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path)) as app:
        admin_ctx = browser.new_context(viewport=DESKTOP)
        admin = sign_in(admin_ctx, app.url, "admin")
        token = admin.evaluate("JSON.parse(document.getElementById('notify-emergency-settings').textContent).csrfToken")
        for level in ("info", "warning", "danger", "critical"):
            reply = admin.request.post(app.url + "/emergency/api/banners/admin", headers={"X-CSRF-Token": token},
                                       data={"level": level, "title": level.title(),
                                             "message": f"A {level} banner, long enough to wrap on a phone screen."})
            assert reply.status == 200, reply.text()
        reply = admin.request.post(app.url + "/emergency/api/emergency/activate", headers={"X-CSRF-Token": token},
                                   data={"reason": "Screenshot drill", "level": 2})
        assert reply.status == 200
        admin.goto(app.url + "/emergency/")
        expect(admin.locator("#ne-live")).to_have_attribute("data-state", "live", timeout=LONG)
        screenshot(admin, "dashboard-overview-desktop")

        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            ctx = browser.new_context(viewport=viewport)
            alice = sign_in(ctx, app.url, "alice")
            expect(alice.locator("[data-banner-id]")).to_have_count(4)
            colours = alice.evaluate("""() => [...document.querySelectorAll('[data-banner-id]')]
                .map(b => getComputedStyle(b).backgroundColor)""")
            assert len(set(colours)) == 4, f"each level looks different: {colours}"
            width = alice.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"no sideways scrolling on {name}: {width}px"
            screenshot(alice, f"user-page-{name}")
            ctx.close()
        phone = browser.new_context(viewport=PHONE)
        overview = sign_in(phone, app.url, "admin")
        overview.goto(app.url + "/emergency/")
        expect(overview.locator("#ne-chart svg")).to_be_visible()
        assert overview.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(overview, "dashboard-overview-phone")
        phone.close()
        admin_ctx.close()

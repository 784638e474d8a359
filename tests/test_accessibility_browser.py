"""For every person on the page, in a real Chromium against the example app served on loopback:

* axe-core finds no WCAG 2.1 AA violation on any dashboard page (desktop and phone, live and
  polling), on the public status page, and on a host page showing every banner level, toasts
  and the emergency notice;
* a poll that brings the same banners leaves their live region's DOM untouched (nothing is
  read out again), and only a change touches it;
* toasts: a dismiss button reached with Tab, Escape; low/normal leave after their reading
  time, high/critical stay; no animation when the system asks for reduced motion;
* every dashboard control is reached with Tab and shows a visible focus; a rollback and a
  restore done with the keyboard alone, the typed confirmation's error announced;
* with the browser's language German (the host uses Flask-Babel), users read the banners, the
  emergency notice, toasts and the status page in German.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.apps import ServedApp, quick_config
from tests.support.axe import assert_no_violations
from tests.support.browser import DESKTOP, PHONE, sign_in
from tests.support.proxy import SocketBreakingProxy
from tests.support.services import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = 45_000  # ms: deadlines for things that happen in seconds, generous for a busy 2-core CI
LEVELS = ("info", "warning", "danger", "critical")


def csrf(page: Any) -> str:
    return str(page.evaluate(
        "JSON.parse(document.getElementById('notify-emergency-settings').textContent).csrfToken"))


def api(page: Any, base_url: str, path: str, **data: Any) -> Any:
    """POST to the dashboard's JSON API as the admin signed in on ``page``."""
    reply = page.request.post(base_url + "/emergency/api/" + path, headers={"X-CSRF-Token": csrf(page)}, data=data)
    assert reply.status == 200, reply.text()
    return reply.json()


def send(page: Any, base_url: str, to: str, title: str, message: str, priority: str = "normal") -> None:
    """Send a notification through the example app's own form, as its users do."""
    page.goto(base_url + "/")
    page.select_option("select[name=user_id]", label=to)
    page.fill("input[name=title]", title)
    page.fill("textarea[name=message]", message)
    page.select_option("select[name=priority]", priority)
    page.click("form.inline button[type=submit]")


def dashboard_paths(base_url: str, event_id: int) -> list[str]:
    return [f"{base_url}/emergency/{p}" for p in
            ("", "events", f"events/{event_id}", "notifications", "banners", "rollback", "settings")]


def test_axe_finds_no_violation_on_the_dashboard_live_and_polling_and_on_the_status_page(
        browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path)) as served, SocketBreakingProxy(served.port) as app:
        setup = sign_in(browser.new_context(viewport=DESKTOP), app.url, "admin")
        for level in LEVELS:
            api(setup, app.url, "banners/admin", level=level, title=level.title(), message=f"A {level} banner.")
        event = api(setup, app.url, "emergency/activate", reason="Queue unreachable", level=2)
        event_id = int(event["event"]["id"])
        send(setup, app.url, "alice", "Waiting", "Sent during the emergency.", "high")

        contexts = {name: browser.new_context(viewport=viewport) for name, viewport in
                    (("desktop", DESKTOP), ("phone", PHONE))}
        pages = {name: sign_in(ctx, app.url, "admin") for name, ctx in contexts.items()}
        for name, page in pages.items():
            for url in dashboard_paths(app.url, event_id):
                page.goto(url)
                expect(page.locator("#ne-live")).to_have_attribute("data-state", "live", timeout=LONG)
                assert_no_violations(page, f"{url} ({name}, live)")
            page.goto(app.url + "/emergency/status-page")
            assert_no_violations(page, f"the status page ({name})")

        app.refuse()  # Socket.IO cut and refused: the dashboard turns to polling its API
        for name, page in pages.items():
            for url in dashboard_paths(app.url, event_id):
                page.goto(url)
                expect(page.locator("#ne-live")).to_have_attribute("data-state", "polling", timeout=LONG)
                page.evaluate("window.neDashboard.refresh()")  # a polled refresh has been applied
                assert_no_violations(page, f"{url} ({name}, polling)")

        # a refused typed confirmation, with its error shown
        page = pages["phone"]
        page.goto(app.url + "/emergency/rollback")
        page.fill("#ne-form-rollback input[name=confirm]", "nope")
        page.focus("#ne-form-rollback button[type=submit]")  # it is aria-disabled: a click is refused
        page.keyboard.press("Enter")
        expect(page.locator("#ne-form-rollback-errors")).to_contain_text("ROLLBACK")
        assert_no_violations(page, "the rollback page with a refused confirmation")
        for ctx in contexts.values():
            ctx.close()


def test_axe_finds_no_violation_on_a_host_page_with_every_banner_level_toasts_and_the_notice(
        browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path)) as app:
        admin = sign_in(browser.new_context(viewport=DESKTOP), app.url, "admin")
        for level in LEVELS:
            api(admin, app.url, "banners/admin", level=level, title=level.title(),
                message=f"A {level} banner, long enough to wrap on a phone screen.")
        api(admin, app.url, "emergency/activate", reason="Queue unreachable", level=2)
        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            ctx = browser.new_context(viewport=viewport)
            alice = sign_in(ctx, app.url, "alice")
            expect(alice.locator("[data-banner-id]")).to_have_count(4)
            expect(alice.locator(".notify-emergency-mode")).to_be_visible()
            for priority in ("normal", "critical"):
                send(admin, app.url, "alice", f"A {priority} one", f"Sent to alice with priority {priority}.", priority)
                expect(alice.locator(f".notify-emergency-priority-{priority}")).to_be_visible(timeout=LONG)
            assert_no_violations(alice, f"the host page with banners, toasts and the notice ({name})")
            ctx.close()


def test_a_poll_leaves_unchanged_banners_untouched_and_a_change_touches_only_what_changed(
        browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path)) as app:
        admin = sign_in(browser.new_context(viewport=DESKTOP), app.url, "admin")
        first = api(admin, app.url, "banners/admin", level="warning", title="Maintenance", message="At 22:00.")
        api(admin, app.url, "emergency/activate", reason="Queue unreachable", level=2)
        alice = sign_in(browser.new_context(viewport=DESKTOP), app.url, "alice")
        expect(alice.locator(".notify-emergency-mode")).to_be_visible()
        alice.evaluate("""() => {
            window.__mutations = [];
            const box = document.getElementById('notify-emergency-banners');
            for (const el of box.children) { el.__original = true; }
            new MutationObserver(records => { for (const r of records) window.__mutations.push(r.type); })
              .observe(box, {subtree: true, childList: true, characterData: true, attributes: true});
        }""")
        # emergency mode: the client polls every second. The fourth poll starts only after the
        # third one's answer (the same banners and mode) was applied.
        for _ in range(4):
            with alice.expect_request(lambda r: r.url.endswith("/api/notifications/poll"), timeout=LONG):
                pass
        assert alice.evaluate("window.__mutations") == [], "a poll re-rendered unchanged banners"

        # a new banner: added, and the old ones keep their elements (not read out again)
        api(admin, app.url, "banners/admin", level="info", title="New", message="A second banner.")
        expect(alice.locator("[data-banner-id]").filter(has_text="A second banner.")).to_be_visible(timeout=LONG)
        kept = alice.evaluate("""() => Array.from(document.getElementById('notify-emergency-banners').children)
            .filter(el => el.__original).map(el => el.dataset.bannerId || el.dataset.mode)""")
        assert kept == ["emergency", str(first["banner_id"])]
        assert set(alice.evaluate("window.__mutations")) == {"childList"}

        # the mode goes back to normal: the notice goes, the banners stay as they are
        alice.evaluate("window.__mutations = []")
        api(admin, app.url, "emergency/deactivate", reason="fixed", force="1")
        expect(alice.locator(".notify-emergency-mode")).to_have_count(0, timeout=LONG)
        assert alice.evaluate("""() => Array.from(document.getElementById('notify-emergency-banners').children)
            .filter(el => el.__original).length""") == 1


def tab_until(page: Any, selector: str, limit: int = 80) -> list[str]:
    """Press Tab until the focus is on ``selector``; return what was focused on the way."""
    visited = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return visited
        visited.append(page.evaluate("""() => { const e = document.activeElement;
            return e ? (e.name || e.id || e.textContent || e.tagName).trim().slice(0, 40) : ''; }"""))
    raise AssertionError(f"Tab never reached {selector}; it went through {visited}")


def focus_ring(page: Any) -> str:
    """The focused element's outline, as the browser draws it."""
    return str(page.evaluate("""() => { const s = getComputedStyle(document.activeElement);
        return s.outlineStyle + ' ' + s.outlineWidth; }"""))


def test_toasts_are_dismissed_by_keyboard_stay_to_be_read_and_do_not_move_for_reduced_motion(
        browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path, NOTIFY_EMERGENCY_TOAST_SECONDS=3.0)) as app:
        admin = sign_in(browser.new_context(viewport=DESKTOP), app.url, "admin")
        alice = sign_in(browser.new_context(viewport=DESKTOP, reduced_motion="reduce"), app.url, "alice")
        bob = sign_in(browser.new_context(viewport=DESKTOP, reduced_motion="no-preference"), app.url, "bob")
        for page in (alice, bob):
            page.wait_for_function("document.documentElement.dataset.notifyEmergencyChannel !== undefined")

        send(admin, app.url, "alice", "Critical one", "Stays until dismissed.", "critical")
        send(admin, app.url, "alice", "Normal one", "Leaves after its reading time.", "normal")
        send(admin, app.url, "bob", "Bob's", "Slides in.", "normal")
        critical = alice.locator(".notify-emergency-toast").filter(has_text="Critical one")
        normal = alice.locator(".notify-emergency-toast").filter(has_text="Normal one")
        expect(critical).to_be_visible(timeout=LONG)
        expect(normal).to_be_visible(timeout=LONG)
        # announced by their live regions: urgent at once, the others politely; additions only
        assert critical.evaluate("e => e.parentElement.getAttribute('aria-live')") == "assertive"
        assert normal.evaluate("e => e.parentElement.getAttribute('aria-live')") == "polite"
        assert normal.evaluate("e => e.parentElement.getAttribute('aria-relevant')") == "additions"
        # reduced motion: no animation; otherwise the toast slides in
        assert critical.evaluate("e => getComputedStyle(e).animationName") == "none"
        bobs = bob.locator(".notify-emergency-toast").filter(has_text="Bob's")
        expect(bobs).to_be_visible(timeout=LONG)
        assert bobs.evaluate("e => getComputedStyle(e).animationName") == "notify-emergency-toast-in"

        # the normal toast leaves after its reading time (3 s here); the critical one stays
        expect(normal).to_have_count(0, timeout=LONG)
        expect(critical).to_be_visible()
        # its dismiss button is reached with Tab, shows its focus, says what it dismisses
        alice.evaluate("document.activeElement && document.activeElement.blur()")
        tab_until(alice, ".notify-emergency-priority-critical .notify-emergency-close")
        assert focus_ring(alice).startswith("solid"), focus_ring(alice)
        assert alice.evaluate("document.activeElement.getAttribute('aria-label')") == "Dismiss: Critical one"
        alice.keyboard.press("Enter")
        expect(critical).to_have_count(0)

        # Escape dismisses the toast the focus is in
        send(admin, app.url, "alice", "High one", "Also stays.", "high")
        high = alice.locator(".notify-emergency-toast").filter(has_text="High one")
        expect(high).to_be_visible(timeout=LONG)
        alice.evaluate("document.activeElement && document.activeElement.blur()")
        tab_until(alice, ".notify-emergency-priority-high .notify-emergency-close")
        alice.keyboard.press("Escape")
        expect(high).to_have_count(0)


def test_every_dashboard_control_is_reached_by_tab_with_a_visible_focus(browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path)) as app:
        admin = sign_in(browser.new_context(viewport=DESKTOP), app.url, "admin")
        api(admin, app.url, "banners/admin", level="info", title="Heads up", message="Dismissable.")
        event = api(admin, app.url, "emergency/activate", reason="Queue unreachable", level=2)
        for url in dashboard_paths(app.url, int(event["event"]["id"])):
            admin.goto(url)
            expect(admin.locator("#ne-live")).not_to_have_attribute("data-state", "connecting", timeout=LONG)
            wanted = admin.evaluate("""() => {
                const all = document.querySelectorAll('.ne-dashboard a[href], .ne-dashboard button, .ne-dashboard input:not([type=hidden]), .ne-dashboard select, .ne-dashboard textarea, .ne-dashboard summary');
                let i = 0;
                for (const el of all) { if (el.getClientRects().length || el.classList.contains('ne-skip')) { el.dataset.kb = String(i++); } }
                return i; }""")
            assert wanted > 0, url
            admin.evaluate("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
            reached: dict[str, str] = {}
            for _ in range(wanted + 40):
                admin.keyboard.press("Tab")
                index = admin.evaluate("document.activeElement.dataset.kb || null")
                if index is not None:
                    reached.setdefault(index, focus_ring(admin))
                if len(reached) == wanted:
                    break
            missing = admin.evaluate("""(seen) => Array.from(document.querySelectorAll('[data-kb]'))
                .filter(el => !seen.includes(el.dataset.kb)).map(el => el.outerHTML.slice(0, 100))""", list(reached))
            assert not missing, f"{url}: Tab never reaches {missing}"
            unringed = {i: ring for i, ring in reached.items() if not ring.startswith("solid")}
            assert not unringed, f"{url}: no visible focus on {unringed}"


def test_a_rollback_and_a_restore_with_the_keyboard_alone(browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path)) as app:
        page = browser.new_context(viewport=DESKTOP).new_page()
        # signing in by keyboard too
        page.goto(app.url + "/login")
        tab_until(page, "input[name=username]")
        page.keyboard.type("admin")
        page.keyboard.press("Tab")
        page.keyboard.type("admin")
        page.keyboard.press("Enter")
        page.wait_for_url(lambda url: "/login" not in url)
        page.goto(app.url + "/emergency/rollback")
        expect(page.locator("#ne-live")).not_to_have_attribute("data-state", "connecting", timeout=LONG)

        # the skip link comes first and leads to the content
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.classList.contains('ne-skip')")
        page.keyboard.press("Enter")
        # in order: reason, the typed word, dry run, the button
        tab_until(page, "#ne-form-rollback input[name=reason]")
        page.keyboard.type("queue lost, rolling back")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.name") == "confirm"
        page.keyboard.type("rollback")  # not the word: it must be in capitals
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.name") == "dry_run"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.type") == "submit"
        assert focus_ring(page).startswith("solid")
        page.keyboard.press("Enter")
        # refused: the error is announced (an alert), the field marked and focused
        errors = page.locator("#ne-form-rollback-errors")
        expect(errors).to_contain_text("Type ROLLBACK")
        assert errors.get_attribute("role") == "alert"
        assert page.evaluate("document.activeElement.name") == "confirm"
        assert page.evaluate("document.activeElement.getAttribute('aria-invalid')") == "true"
        assert page.evaluate("document.activeElement.getAttribute('aria-describedby')") == "ne-form-rollback-errors"
        expect(page.locator("#ne-state [data-format=mode]")).to_have_text("mode: normal")
        page.keyboard.press("Control+A")
        page.keyboard.type("ROLLBACK")
        page.keyboard.press("Enter")  # Enter in a field submits its form
        expect(page.locator(".ne-flash").filter(has_text="Rollback: done")).to_be_visible(timeout=LONG)
        expect(page.locator("#ne-state [data-format=mode]")).to_have_text("mode: legacy", timeout=LONG)

        tab_until(page, "#ne-form-restore input[name=reason]")
        page.keyboard.type("queue is back")
        page.keyboard.press("Tab")
        page.keyboard.type("RESTORE")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.name") == "force"
        page.keyboard.press("Space")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        expect(page.locator(".ne-flash").filter(has_text="Restore: done")).to_be_visible(timeout=LONG)
        expect(page.locator("#ne-state [data-format=mode]")).to_have_text("mode: normal", timeout=LONG)


def test_a_german_user_reads_banners_notice_toasts_and_status_page_in_german(browser: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    with ServedApp(free_port(), quick_config(tmp_path, DEMO_LANGUAGES=["en", "de"])) as app:
        admin = sign_in(browser.new_context(viewport=DESKTOP, locale="en-GB"), app.url, "admin")
        ctx = browser.new_context(viewport=DESKTOP, locale="de-DE")
        alice = sign_in(ctx, app.url, "alice")
        assert alice.evaluate("document.documentElement.lang") == "de"
        alice.wait_for_function("document.documentElement.dataset.notifyEmergencyChannel !== undefined")
        alice.evaluate("window.__sameDocument = true")

        # the emergency notice, made by the client script on the open page from the page's texts
        api(admin, app.url, "emergency/activate", reason="Queue unreachable", level=2)
        notice = alice.locator(".notify-emergency-mode")
        expect(notice).to_contain_text("Live-Benachrichtigungen sind angehalten.", timeout=LONG)
        expect(notice).to_contain_text("innerhalb von Sekunden, solange diese Seite geöffnet ist")
        # a toast: its dismiss button speaks German
        send(admin, app.url, "alice", "Bildunterschrift fertig", "Ihr Bild hat jetzt einen Alternativtext.", "high")
        toast = alice.locator(".notify-emergency-toast").filter(has_text="Bildunterschrift fertig")
        expect(toast).to_be_visible(timeout=LONG)
        assert toast.locator("button").get_attribute("aria-label") == "Schließen: Bildunterschrift fertig"
        assert alice.evaluate("window.__sameDocument") is True
        # rendered by the server too, after a reload; the admin's own page stays English
        alice.reload()
        expect(alice.locator(".notify-emergency-mode")).to_contain_text("Live-Benachrichtigungen sind angehalten.")
        admin.goto(app.url + "/")
        expect(admin.locator(".notify-emergency-mode")).to_contain_text("Live notifications are paused.")
        assert_no_violations(alice, "the German host page")

        status = ctx.new_page()
        status.goto(app.url + "/emergency/status-page")
        expect(status.locator("h1")).to_have_text("Dienststatus")
        expect(status.locator("#status-label")).to_have_text("In Betrieb")
        assert status.evaluate("document.documentElement.lang") == "de"
        assert_no_violations(status, "the German status page")
        ctx.close()

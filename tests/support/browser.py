"""Driving Debian's Chromium with Playwright, and writing test artifacts."""

from __future__ import annotations

import os
from typing import Any, Iterator

from tests.support import services
from tests.support.apps import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def launch_chromium() -> Iterator[Any]:
    """Yield a headless Chromium (skip locally, fail in CI, when it is missing)."""
    if not os.path.exists(CHROMIUM):
        services.unavailable(f"Chromium at {CHROMIUM}", "not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(context: Any, base_url: str, username: str, password: str | None = None) -> Any:
    """A new page of ``context``, signed in through the example app's login form."""
    page = context.new_page()
    log_in(page, base_url, username, password)
    return page


def log_in(page: Any, base_url: str, username: str, password: str | None = None) -> None:
    """Sign in on ``page`` through the example app's login form (ends on the home page)."""
    page.goto(base_url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password if password is not None else username)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def screenshot(page: Any, name: str) -> str:
    """Save a full-page screenshot under ``test-artifacts/``; return its path."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    return path

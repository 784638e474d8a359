"""Real Chromium tabs running the shipped client, counted by what they display.

Each tab signs in through the example app's login form and stays on its home page, loading it
anew every ``page_every`` seconds as a user moving around the site would. What the tab
displays is read from the page itself: the client announces each notification it shows (the
``notify-emergency:notification`` DOM event, with the channel that brought it), and after
each page load the visible flash boxes that hold a notification are read from the DOM (a copy
the client hides as already shown is not visible, so it does not count).
"""

from __future__ import annotations

import threading
import time

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

from .users import Display, Tally

RECORDER = r"""
(() => {
  const marker = /chaos:[0-9a-z]+:[0-9]+/;
  // a display is kept in sessionStorage until the suite has it, so a page load right after a
  // toast appeared does not lose the record of it (each display has its own key: no double count)
  const key = "chaos-unreported";
  const unreported = () => JSON.parse(sessionStorage.getItem(key) || "[]");
  const save = (list) => sessionStorage.setItem(key, JSON.stringify(list));
  const send = (entry) => window.chaosShown(entry[0], entry[1], entry[2], entry[3]).then(() => {
    save(unreported().filter((e) => e[0] !== entry[0]));
  });
  const report = (text, via) => {
    const entry = [Math.random().toString(36).slice(2) + Date.now(), text, via, Date.now() / 1000];
    save(unreported().concat([entry]));
    send(entry);
  };
  unreported().forEach(send);
  document.addEventListener("notify-emergency:notification", (e) => {
    const n = (e.detail || {}).notification || {};
    const found = String(n.title || "").match(marker);
    if (found) { report(found[0], e.detail.via || "socket"); }
  });
  const flashes = () => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    while (walker.nextNode()) {
      const node = walker.currentNode;
      const found = node.nodeValue.match(marker);
      const element = node.parentElement;
      if (!found || !element || element.closest(".notify-emergency-toast")) { continue; }
      if (element.getClientRects().length === 0 || getComputedStyle(element).visibility === "hidden") { continue; }
      if (seen.has(found[0])) { continue; }
      seen.add(found[0]);
      report(found[0], "flash");
    }
  };
  window.addEventListener("load", () => setTimeout(flashes, 500));
})();
"""


class BrowserTabs:
    """``usernames`` each in a Chromium tab of their own, in one thread (Playwright's rule)."""

    def __init__(self, base_urls: list[str], usernames: list[str], password: str, page_every: float = 10.0) -> None:
        self.base_urls = base_urls
        self.usernames = usernames
        self.password = password
        self.page_every = page_every
        self.tallies = {name: Tally() for name in usernames}
        self.reported: set[str] = set()
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="chaos-chromium", daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(300) or self.error:
            raise RuntimeError(f"Chromium tabs did not start: {self.error!r}")

    def _record(self, name: str, key: str, marker: str, via: str, at: float) -> None:
        with self.lock:
            if key in self.reported:
                return  # reported again after a page load cut the first answer short
            self.reported.add(key)
            self.tallies[name].displays.append(Display(marker, via, float(at)))

    def _run(self) -> None:
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                pages = []
                for i, name in enumerate(self.usernames):
                    context = browser.new_context()
                    context.expose_binding("chaosShown", lambda source, key, marker, via, at, name=name:
                                           self._record(name, key, marker, via, at))
                    context.add_init_script(RECORDER)
                    context.set_default_timeout(90000)  # a busy machine: the login page may be slow
                    page = context.new_page()
                    base = self.base_urls[i % len(self.base_urls)]
                    page.goto(base + "/login")
                    page.fill("input[name=username]", name)
                    page.fill("input[name=password]", self.password)
                    page.click("button[type=submit]")
                    page.wait_for_url(lambda url: "/login" not in url)
                    pages.append(page)
                self.ready.set()
                next_load = [time.monotonic() + self.page_every * (i + 1) / len(pages) for i in range(len(pages))]
                while not self.stopping.is_set():
                    for i, page in enumerate(pages):
                        page.wait_for_timeout(50)  # lets the pages' events reach the bindings
                        if time.monotonic() >= next_load[i]:
                            try:
                                page.reload(timeout=30000)
                            except Exception:
                                pass  # the server is down: the next load tries again
                            next_load[i] = time.monotonic() + self.page_every
                for page in pages:  # a last page load, as a user who comes back
                    try:
                        page.reload(timeout=30000)
                        page.wait_for_timeout(1500)
                    except Exception:
                        pass
                browser.close()
        except BaseException as exc:  # reported by start() or finish()
            self.error = exc
            self.ready.set()

    def finish(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=120)


class BrowserUser:
    """One tab's tally, as the counting of a run reads a :class:`.users.SimUser`."""

    def __init__(self, tabs: BrowserTabs, name: str) -> None:
        self.tabs = tabs
        self.name = name

    @property
    def tally(self) -> Tally:
        return self.tabs.tallies[self.name]

    def finish(self) -> None:
        self.tabs.finish()

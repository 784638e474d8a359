"""The shipped client in Chromium shows each notification once, whatever brings it.

* A hung (SIGSTOP) Socket.IO message queue during sends: each send gives up after
  NOTIFIER_TIMEOUT and the notification is flashed; when the queue resumes the emits stuck
  in it arrive over the socket too, and the client drops those copies by id.
* A socket that drops after the notification arrived and before its acknowledgement: the
  ack outbox goes with the next request, so the notification is not flashed, not polled and
  not shown in another tab.
* A host template printing flashes with ``|safe``: hostile text shows literally, and action
  URLs that would leave the site are not linked.
* A notification a poll brought and the page showed, whose confirmation was lost (the ack
  refused, the outbox cookie gone): the server offers it again once the confirmation deadline
  passes, and the client drops the copy and confirms it; it is shown once.

Displays are counted by id, in the page: toasts, and flash boxes the user can see.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any, Callable

import pytest
import requests

from tests.support.apps import ServedApp
from tests.support.browser import log_in
from tests.support.outages import PrivateRedis
from tests.support.pages import notification_rows
from tests.support.services import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Ids of the toasts on the page, and of the flash boxes in it a user can see.
DISPLAYED_JS = r"""() => {
  const toasts = Array.from(document.querySelectorAll(".notify-emergency-toast"))
    .filter(e => e.checkVisibility()).map(e => Number(e.dataset.notificationId));
  const flashes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const m = /\u2063([\u200b\u200c]+)\u2063/.exec(node.nodeValue);
    if (m && node.parentElement.checkVisibility()) {
      flashes.push(parseInt(m[1].replace(/\u200b/g, "0").replace(/\u200c/g, "1"), 2));
    }
  }
  return {toasts, flashes};
}"""


def wait_in_page(page: Any, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` while Playwright keeps delivering the page's events."""
    for _ in range(int(timeout * 10)):
        result = predicate()
        if result:
            return result
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Displays:
    """Every display of a notification in a tab, counted by id over its page loads."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.count: Counter[int] = Counter()
        self.by_flash: set[int] = set()

    def current(self) -> dict[str, list[int]]:
        return self.page.evaluate(DISPLAYED_JS)  # type: ignore[no-any-return]

    def close_page(self) -> None:
        """Count what this page load showed (call before the page goes)."""
        shown = self.current()
        self.count.update(shown["toasts"] + shown["flashes"])
        self.by_flash.update(shown["flashes"])

    def reload(self) -> None:
        self.close_page()
        self.page.reload()
        self.page.wait_for_load_state("load")


def admin_session(url: str) -> requests.Session:
    session = requests.Session()
    response = session.post(f"{url}/login", data={"username": "admin", "password": "admin"},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302
    return session


def send_via_app(session: requests.Session, url: str, to: str, title: str) -> None:
    """Send through the example app's own form (the served process emits)."""
    response = session.post(f"{url}/send", data={"user_id": to, "title": title, "message": "body"},
                            allow_redirects=False, timeout=30)
    assert response.status_code == 302


def wait_live(page: Any) -> None:
    page.wait_for_function("document.documentElement.dataset.notifyEmergencyChannel === 'live'", timeout=15000)


def ids_of(local: Any, prefix: str) -> list[int]:
    return [r["id"] for r in notification_rows(local) if r["title"].startswith(prefix)]


def test_a_hung_message_queue_never_shows_a_notification_twice(browser, make_app, tmp_path, redis_url, redis_prefix):
    """Two served workers: the admin sends through one, alice's socket is on the other, so every
    emit to her crosses the (private, frozen) message queue."""
    queue = PrivateRedis()
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'hung.sqlite'}",
              "NOTIFY_EMERGENCY_REDIS_URL": redis_url, "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix,
              "NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_ACK_TIMEOUT": 2.0,
              "NOTIFY_EMERGENCY_SWEEP_SECONDS": 1.0, "NOTIFY_EMERGENCY_POLL_INTERVAL": 5.0,
              "NOTIFY_EMERGENCY_FLASH_BATCH_SIZE": 10, "NOTIFY_EMERGENCY_BREAKER_MIN_CALLS": 1000}
    local, _ = make_app(**config)
    with local.app_context():
        alice_id = str(local.extensions["demo"]["User"].query.filter_by(username="alice").one().id)
    config["SOCKETIO_MESSAGE_QUEUE"] = queue.url
    sender = ServedApp(free_port(), config)
    served = ServedApp(free_port(), config)
    context = browser.new_context()
    try:
        page = context.new_page()
        notifications_in: list[int] = []
        acks_out: list[str] = []

        def on_socket(ws: Any) -> None:
            def received(payload: Any) -> None:
                if isinstance(payload, str) and "notify_emergency:notification" in payload:
                    notifications_in.extend(int(i) for i in re.findall(r'"id":\s*(\d+)', payload)[:1])

            def sent(payload: Any) -> None:
                if isinstance(payload, str) and "notify_emergency:ack" in payload:
                    acks_out.append(payload)

            ws.on("framereceived", received)
            ws.on("framesent", sent)

        page.on("websocket", on_socket)
        log_in(page, served.url, "alice")
        wait_live(page)
        shown = Displays(page)
        admin = admin_session(sender.url)

        send_via_app(admin, sender.url, alice_id, "live")
        [live_id] = ids_of(local, "live")
        wait_in_page(page, lambda: live_id in shown.current()["toasts"], what="the live toast")
        wait_in_page(page, lambda: notification_rows(local, id=live_id)[0]["delivered"], what="its ack")

        queue.freeze()
        for i in range(6):
            send_via_app(admin, sender.url, alice_id, f"frozen {i}")
        frozen = ids_of(local, "frozen")
        assert len(frozen) == 6
        rows = notification_rows(local)
        assert all(r["realtime_deadline"] is None for r in rows if r["id"] in frozen), \
            f"every send gave up on the hung queue and fell back: {rows}"
        shown.reload()  # the next page flashes them
        wait_in_page(page, lambda: all(r["delivered"] for r in notification_rows(local)), what="every row delivered")
        assert set(frozen) <= set(shown.current()["flashes"]) | set(shown.current()["toasts"])

        queue.thaw()
        # the emits stuck in the queue are delivered now, to the page's new socket
        stale = wait_in_page(page, lambda: set(notifications_in) & set(frozen), timeout=20,
                             what="the stale emits to arrive over the socket")
        # the client handles a notification by showing (or dropping) it, then acknowledging
        wait_in_page(page, lambda: all(any(f"{i}" in a for a in acks_out) for i in stale), what="the acks")
        shown.reload()
        shown.close_page()

        sent = [live_id] + frozen
        assert {i: shown.count[i] for i in sent} == {i: 1 for i in sent}
        assert set(stale) <= shown.by_flash, "the stale copies were of notifications shown as flashes"
        assert set(shown.count) == set(sent)
    finally:
        context.close()
        served.stop()
        sender.stop()
        queue.stop()


def test_an_ack_lost_with_the_socket_is_taken_from_the_outbox(browser, make_app, tmp_path):
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'lost.sqlite'}",
              "NOTIFY_EMERGENCY_ACK_TIMEOUT": 1.0, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.5,
              "NOTIFY_EMERGENCY_POLL_INTERVAL": 1.0, "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5}
    local, _ = make_app(**config)
    with local.app_context():
        alice_id = str(local.extensions["demo"]["User"].query.filter_by(username="alice").one().id)
    served = ServedApp(free_port(), config)
    context = browser.new_context()
    dropped: list[str] = []
    polled_socket: list[str] = []
    cut = threading.Event()
    try:
        page = context.new_page()

        def route_socket(ws: Any) -> None:
            server = ws.connect_to_server()

            def from_page(message: Any) -> None:
                if isinstance(message, str) and "notify_emergency:ack" in message:
                    dropped.append(message)  # the ack never reaches the server over the socket
                    return
                server.send(message)

            def from_server(message: Any) -> None:
                ws.send(message)
                if isinstance(message, str) and "notify_emergency:notification" in message and not cut.is_set():
                    cut.set()  # the notification is in the page: the connection dies now
                    ws.close()
                    server.close()

            ws.on_message(from_page)
            server.on_message(from_server)

        page.route_web_socket(re.compile(r".*/socket\.io/.*"), route_socket)
        page.on("request", lambda r: "transport=polling" in r.url and polled_socket.append(r.url))
        log_in(page, served.url, "alice")
        wait_live(page)
        shown = Displays(page)

        send_via_app(admin_session(served.url), served.url, alice_id, "lost ack")
        [nid] = ids_of(local, "lost ack")
        wait_in_page(page, lambda: nid in shown.current()["toasts"], what="the toast")
        wait_in_page(page, lambda: cut.is_set() and dropped, what="the ack to be lost with the socket")

        shown.reload()  # a page load, then the client's polls
        wait_in_page(page, lambda: notification_rows(local, id=nid)[0]["delivered"], what="the outbox ack")
        page.wait_for_function("document.cookie.indexOf('notify_emergency_acks=') < 0", timeout=15000)
        shown.close_page()
        other = context.new_page()  # another tab of the same browser: nothing for it
        other.goto(served.url + "/")
        other_shown = Displays(other)
        other.wait_for_timeout(1500)  # two poll intervals of the new tab
        other_shown.close_page()

        row = notification_rows(local, id=nid)[0]
        assert (row["delivered"], row["channel"]) == (True, "realtime")
        assert shown.count == Counter({nid: 1}) and other_shown.count == Counter()
        assert polled_socket == []  # every ack the page sent went over the routed websocket and was dropped
    finally:
        context.close()
        served.stop()


def test_a_polled_notification_whose_confirmation_is_lost_is_offered_again_and_shown_once(browser, make_app,
                                                                                        tmp_path):
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'confirm.sqlite'}",
              "NOTIFY_EMERGENCY_ACK_TIMEOUT": 0.5, "NOTIFY_EMERGENCY_SWEEP_SECONDS": 0.3,
              "NOTIFY_EMERGENCY_POLL_INTERVAL": 0.5, "NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS": 0.5,
              "NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT": 1.5}
    local, _ = make_app(**config)
    cookie = local.config["NOTIFY_EMERGENCY_ACK_COOKIE_NAME"]
    with local.app_context():
        alice_id = str(local.extensions["demo"]["User"].query.filter_by(username="alice").one().id)
    served = ServedApp(free_port(), config)
    context = browser.new_context()
    offered: list[int] = []  # the ids of every poll reply that reached the page
    losing = threading.Event()
    try:
        page = context.new_page()
        # no socket at all: the page polls
        page.route_web_socket(re.compile(r".*/socket\.io/.*"), lambda ws: ws.close())
        page.route(re.compile(r".*/socket\.io/.*"), lambda route: route.abort())

        def on_poll(route: Any) -> None:
            if losing.is_set():
                route.abort()  # the confirmation the next poll would carry is lost
                return
            response = route.fetch()
            ids = [int(n["id"]) for n in response.json().get("notifications", [])]
            offered.extend(ids)
            if ids and len(offered) == len(ids):
                losing.set()  # the first offer is in the page: its confirmation will be lost
            route.fulfill(response=response)

        def on_ack(route: Any) -> None:
            if losing.is_set():
                route.abort()
            else:
                route.continue_()

        page.route(re.compile(r".*/api/notifications/poll$"), on_poll)
        page.route(re.compile(r".*/api/notifications/ack$"), on_ack)
        page.add_init_script("""window.__shownIds = [];
            document.addEventListener('notify-emergency:notification',
              e => window.__shownIds.push(e.detail.notification.id));""")
        log_in(page, served.url, "alice")
        send_via_app(admin_session(served.url), served.url, alice_id, "confirm lost")
        [nid] = ids_of(local, "confirm lost")
        wait_in_page(page, lambda: page.evaluate("window.__shownIds").count(nid) == 1, what="the toast")
        # the page put it in the outbox and tried to confirm; all of that is lost
        wait_in_page(page, lambda: any(c["name"] == cookie for c in context.cookies()), what="the outbox cookie")
        context.clear_cookies(name=cookie)
        row = notification_rows(local, id=nid)[0]
        assert (row["delivered"], row["offered_via"]) == (False, "poll")
        losing.clear()

        # the offer lapses, a poll brings it again, the page drops the copy and confirms it
        wait_in_page(page, lambda: offered.count(nid) >= 2, timeout=20, what="the lapsed offer polled again")
        wait_in_page(page, lambda: notification_rows(local, id=nid)[0]["delivered"], what="its confirmation")
        row = notification_rows(local, id=nid)[0]
        assert (row["delivered"], row["channel"]) == (True, "poll")
        assert page.evaluate("window.__shownIds") == [nid]
        assert page.locator(f".notify-emergency-toast[data-notification-id='{nid}']").count() == 1
    finally:
        context.close()
        served.stop()


def test_a_safe_host_template_shows_hostile_text_literally(browser, tmp_path):
    from flask import Flask, render_template_string
    from flask_login import LoginManager, UserMixin, login_user
    from flask_sqlalchemy import SQLAlchemy
    from werkzeug.serving import make_server

    from flask_notify_emergency import NotifyEmergency
    from flask_notify_emergency.models import utcnow

    hostile = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    app = Flask("safe_host")
    app.config.update(SECRET_KEY="t", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'safe.sqlite'}",
                      NOTIFY_EMERGENCY_MONITOR_ENABLED=False, NOTIFY_EMERGENCY_POLL_INTERVAL=0.5,
                      NOTIFY_EMERGENCY_FLASH_BATCH_SIZE=2)
    db = SQLAlchemy(app)
    manager = LoginManager(app)

    class Person(UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid

    manager.user_loader(lambda uid: Person(uid) if uid == "7" else None)
    notify = NotifyEmergency(app, db=db)  # no socket: flashes and polls
    with app.app_context():
        db.create_all()

    @app.route("/in")
    def sign_in() -> str:
        login_user(Person("7"))
        return "in"

    @app.route("/")
    def home() -> str:
        return render_template_string(
            "<!doctype html><body>{% for m in get_flashed_messages() %}<div class='alert'>{{ m|safe }}"
            "<button>x</button></div>{% endfor %}{{ notify_emergency_scripts() }}</body>")

    links = ["/inside?a=1", "https://example.org/ok", "//evil.example/x", "/\\evil.example/x",
             "/\t/evil.example/x", "javascript:window.__xss=3", "data:text/html,hi", "http:/evil.example"]
    with app.app_context():
        ext = app.extensions["notify_emergency"]
        flashed = [notify.send("7", f"hostile {i}", hostile) for i in range(2)]
        for i, url in enumerate(links):
            # stored as rows of an older release would be, before send() checked the URL itself
            ext.store.create({"user_id": "7", "audience": "user", "title": f"link {i}", "message": "m",
                              "priority": "normal", "category": "system", "action_url": url,
                              "created_at": utcnow(), "delivered": False,
                              "attempts": 0})
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    context = browser.new_context()
    try:
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(base + "/in")
        page.goto(base + "/")  # the page flashes the first pending rows; the client polls the rest
        texts = page.locator(".alert").all_inner_texts()
        assert [t.replace("\u2063", "").replace("\u200b", "").replace("\u200c", "").rstrip("x").strip()
                for t in texts[:2]] == [f"hostile {i}: {hostile}" for i in range(2)]
        shown = Displays(page)
        assert shown.current()["flashes"][:2] == flashed
        page.wait_for_function(f"document.querySelectorAll('.notify-emergency-toast').length >= {len(links)}",
                               timeout=15000)
        hrefs = page.evaluate("""() => Array.from(document.querySelectorAll('.notify-emergency-toast'))
            .filter(t => t.querySelector('strong').textContent.startsWith('link '))
            .map(t => [t.querySelector('strong').textContent, (t.querySelector('a') || {}).href || null])""")
        by_title = dict(hrefs)
        assert by_title == {"link 0": base + "/inside?a=1", "link 1": "https://example.org/ok",
                            **{f"link {i}": None for i in range(2, len(links))}}
        assert page.evaluate("window.__xss") is None and dialogs == []
    finally:
        context.close()
        server.shutdown()
        ext.close()

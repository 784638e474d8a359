"""Clients that behave like the shipped ``static/client.js``, and the sender.

A :class:`SimUser` is one signed-in browser tab: a real session cookie from ``/login``, a
python-socketio client on the user namespace with that cookie, the settings (CSRF token,
URLs, poll interval) read from the page, and the same rules as ``client.js``:

- a notification is shown once in the tab whatever brings it (socket, poll, a flash in the
  page), remembered by id; a later copy is dropped (and counted as dropped, not as shown);
- a notification from the socket or a poll, or a flash in a page, goes into the ack outbox
  (the cookie the next request carries) and is acknowledged over the socket (a poll's, without
  a socket, by ``POST api/notifications/ack``); the reply takes it out of the outbox;
- it polls every ``POLL_INTERVAL`` (six times that while live in normal mode), at once when
  the socket drops, when told ``pending`` and after a poll that returned something;
- it loads a page now and then and reads the extension's flashes by their id marker.

With ``drop_acks`` it plays a connection that breaks after a notification arrived and before
its acknowledgement left: it shows it, keeps the id in the outbox, aborts the socket and,
as a browser does, reconnects (after ``RECONNECT_SECONDS``) and sends the outbox then.
Every display is recorded with its channel and time; a copy dropped as already shown is what
a tab would have shown twice without the rule, and a display of one id twice is a visible
duplicate.
"""

from __future__ import annotations

import collections
import http.client
import itertools
import json
import queue
import random
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import requests
import socketio

from flask_notify_emergency.delivery import ACK_EVENT, EVENT

MARK, ZERO, ONE = "\u2063", "\u200b", "\u200c"
FLASH_ID = re.compile(f"{MARK}([{ZERO}{ONE}]{{1,62}}){MARK}")
SETTINGS = re.compile(r'<script type="application/json" id="notify-emergency-settings">(.*?)</script>', re.S)
TITLE = re.compile(r"(chaos:[0-9a-z]+:[0-9]+)")
OUTBOX_COOKIE = "notify_emergency_acks"
PENDING_EVENT = "notify_emergency:pending"
MODE_EVENT = "notify_emergency:mode"
#: numbers of every send of the process: a raw emit's id is minus its number, and a tab shows
#: one id once, so two senders must never hand out the same
SEQUENCE = itertools.count(1)
#: seconds before a tab whose socket broke tries again
RECONNECT_SECONDS = 3.0


@dataclass
class Display:
    marker: str
    channel: str
    at: float


@dataclass
class Tally:
    displays: list[Display] = field(default_factory=list)
    #: markers of copies dropped because the tab had shown that id
    dropped: list[str] = field(default_factory=list)
    dropped_copies: int = 0
    visible_duplicates: int = 0
    #: polls and page loads whose reply never came (the server may have claimed rows for it)
    lost_replies: int = 0


class SimUser:
    """One signed-in tab of ``username`` on ``base`` (one worker's URL)."""

    def __init__(self, base: str, username: str, password: str, *, drop_acks: float = 0.0,
                 page_every: float = 15.0, seed: int = 0) -> None:
        self.base = base
        self.username = username
        self.password = password
        self.drop_acks = drop_acks
        self.page_every = page_every
        self.random = random.Random(seed)
        self.http = requests.Session()
        self.seen: dict[int, str] = {}
        self.shown_markers: set[str] = set()
        self.outbox: list[int] = []
        self.tally = Tally()
        self.lock = threading.Lock()
        self.live = False
        #: every mode this tab was told of (a page, a poll, the mode push), cleared by whoever reads it
        self.modes_seen: set[str] = set()
        self._mode = "normal"
        self.poll_interval = 5.0
        self.settings: dict[str, Any] = {}
        self.stopping = threading.Event()
        self.poll_now = threading.Event()
        self.sio: socketio.Client | None = None
        self.threads: list[threading.Thread] = []

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = value
        self.modes_seen.add(value)

    # -- the page ----------------------------------------------------------------------
    def login(self) -> None:
        reply = self.http.post(self.base + "/login", data={"username": self.username, "password": self.password},
                               allow_redirects=False, timeout=20)
        if reply.status_code != 302:
            raise RuntimeError(f"login of {self.username} failed: {reply.status_code}")
        self.load_page()

    def load_page(self) -> None:
        """A page load: carries the outbox, shows the flashes it holds, refreshes the settings."""
        self._carry_outbox()
        carried = list(self.outbox)
        try:
            reply = self.http.get(self.base + "/", timeout=20)
        except requests.RequestException:
            with self.lock:
                self.tally.lost_replies += 1
            return
        if reply.status_code != 200:
            return
        self._confirmed(carried)
        found = SETTINGS.search(reply.text)
        if found:
            self.settings = json.loads(found.group(1))
            self.poll_interval = float(self.settings.get("pollInterval") or 5)
            self.mode = self.settings.get("mode") or self.mode
        # the flashes: every marker in the page is one (the example page shows nothing else of
        # ours); the id written after it in invisible characters lets the client drop a copy
        for found_marker in TITLE.finditer(reply.text):
            tail = reply.text[found_marker.end():found_marker.end() + 600]
            bits = FLASH_ID.search(tail)
            nid = int(bits.group(1).replace(ZERO, "0").replace(ONE, "1"), 2) if bits else None
            self.show(nid, found_marker.group(1), "flash")
            if nid is not None:
                self._outbox_add(nid)  # the page response put it there; client.js keeps it
        self._send_acks()

    def show(self, nid: int | None, marker: str, channel: str) -> bool:
        """Show it unless this tab has shown that id; a flash without an id cannot be told apart."""
        with self.lock:
            if nid is not None and nid in self.seen:
                self.tally.dropped_copies += 1
                self.tally.dropped.append(marker)
                return False
            if nid is not None:
                if len(self.seen) >= 500:  # client.js keeps the latest 500
                    self.seen.pop(next(iter(self.seen)))
                self.seen[nid] = marker
            if marker in self.shown_markers:
                self.tally.visible_duplicates += 1
            self.shown_markers.add(marker)
            self.tally.displays.append(Display(marker, channel, time.time()))
            return True

    # -- the outbox ----------------------------------------------------------------------
    def _carry_outbox(self) -> None:
        """Write the outbox as the one cookie a browser keeps: what a page's response put in
        it (the flashes it rendered) joins the outbox first, as client.js reads it on load."""
        jar = self.http.cookies
        mine = [c for c in jar if c.name == OUTBOX_COOKIE]
        with self.lock:
            for cookie in mine:
                for nid in (int(part) for part in (cookie.value or "").split(".") if part.isdigit()):
                    if nid not in self.outbox:
                        self.outbox.append(nid)
            value = ".".join(str(i) for i in self.outbox[-20:])
        for cookie in mine:
            jar.clear(cookie.domain, cookie.path, cookie.name)
        if value:
            jar.set(OUTBOX_COOKIE, value, path="/")

    def _outbox_add(self, nid: int) -> None:
        with self.lock:
            if nid not in self.outbox:
                self.outbox.append(nid)

    def _confirmed(self, ids: list[int]) -> None:
        with self.lock:
            self.outbox = [i for i in self.outbox if i not in ids]

    # -- the socket ------------------------------------------------------------------------
    def connect(self) -> None:
        sio = socketio.Client(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=5)
        namespace = self.settings.get("namespace", "/notify-emergency")

        @sio.on("connect", namespace=namespace)
        def on_connect() -> None:
            self.live = True
            self._send_acks()

        @sio.on("disconnect", namespace=namespace)
        def on_disconnect(*_: Any) -> None:
            self.live = False
            self.poll_now.set()

        @sio.on(EVENT, namespace=namespace)
        def on_notification(n: Any) -> None:
            nid = int(n["id"])
            self.show(nid, str(n.get("title") or f"id:{nid}"), "socket")
            with self.lock:
                self.outbox.append(nid)
            if self.drop_acks and self.random.random() < self.drop_acks:
                # the connection breaks after receipt, before the acknowledgement leaves
                threading.Thread(target=self._abort, daemon=True).start()
                return
            self._send_acks()

        @sio.on(PENDING_EVENT, namespace=namespace)
        def on_pending(*_: Any) -> None:
            self.poll_now.set()

        @sio.on(MODE_EVENT, namespace=namespace)
        def on_mode(data: Any) -> None:
            self.mode = (data or {}).get("mode", self.mode)

        self.sio = sio
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        try:
            sio.connect(self.base, namespaces=[namespace], transports=["websocket"], headers={"Cookie": cookie},
                        wait_timeout=10)
        except Exception:
            self.live = False  # polling covers it; socketio keeps trying only after a first success
            threading.Thread(target=self._reconnect_later, daemon=True).start()

    def _reconnect_later(self) -> None:
        while not self.stopping.wait(RECONNECT_SECONDS):
            if self.live:
                return
            try:
                if self.sio is not None:
                    self.sio.disconnect()
            except Exception:
                pass
            try:
                self.connect()
                return
            except Exception:
                continue

    def _abort(self) -> None:
        sio = self.sio
        if sio is None:
            return
        try:
            sio.eio.disconnect(abort=True)  # no goodbye: as a dropped connection looks
        except Exception:
            pass
        # a browser's socket.io client reconnects after its transport closed; python-socketio
        # takes an abort of its own as meant and would stay away, polling only
        self.live = False
        self._reconnect_later()

    def _send_acks(self, via_http: bool = False) -> None:
        sio = self.sio
        with self.lock:
            ids = list(self.outbox)
        if ids and via_http and (sio is None or not self.live):
            # client.js: without a socket, what a poll showed is confirmed at once by POST
            try:
                reply = self.http.post(self.base + self.settings.get("ackUrl", "/emergency/api/notifications/ack"),
                                       json={"ids": ids[-20:]},
                                       headers={"X-CSRF-Token": self.settings.get("csrfToken") or ""}, timeout=20)
                if reply.status_code == 200:
                    self._confirmed(ids[-20:])
            except requests.RequestException:
                pass  # the ids stay in the outbox for the next request
            return
        if not ids or sio is None or not self.live:
            return

        def confirmed(reply: Any = None) -> None:
            if isinstance(reply, dict) and reply.get("ok"):
                self._confirmed(ids)

        try:
            sio.emit(ACK_EVENT, {"ids": ids[:200]}, namespace=self.settings.get("namespace", "/notify-emergency"),
                     callback=confirmed)
        except Exception:
            pass

    # -- polling -------------------------------------------------------------------------
    def poll(self) -> int:
        self._carry_outbox()
        carried = list(self.outbox)
        try:
            reply = self.http.post(self.base + self.settings.get("pollUrl", "/emergency/api/notifications/poll"),
                                   json={}, headers={"X-CSRF-Token": self.settings.get("csrfToken") or ""},
                                   timeout=20)
        except requests.RequestException:
            with self.lock:
                self.tally.lost_replies += 1
            return 0
        if reply.status_code != 200:
            return 0
        self._confirmed(carried)
        data = reply.json()
        self.mode = data.get("mode", self.mode)
        self.poll_interval = float(data.get("poll_interval") or self.poll_interval)
        offered = data.get("notifications") or []
        for n in offered:
            # shown, or dropped as a copy this tab showed: confirmed either way (client.js)
            self.show(int(n["id"]), str(n.get("title") or f"id:{n['id']}"), "poll")
            self._outbox_add(int(n["id"]))
        if offered:
            self._send_acks(via_http=True)
        return len(offered)

    def _interval(self) -> float:
        base = self.poll_interval
        return base * 6 if (self.live and self.mode == "normal") else base

    def _poll_loop(self) -> None:
        next_page = time.monotonic() + self.random.uniform(0, self.page_every)
        while not self.stopping.is_set():
            woke = self.poll_now.wait(self._interval())
            self.poll_now.clear()
            if self.stopping.is_set():
                return
            if woke:
                time.sleep(0.2)  # client.js: pollSoon
            if self.poll() > 0:
                self.poll_now.set()
            if time.monotonic() >= next_page:
                self.load_page()
                next_page = time.monotonic() + self.page_every

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.login()
        self.connect()
        thread = threading.Thread(target=self._poll_loop, name=f"sim-{self.username}", daemon=True)
        thread.start()
        self.threads.append(thread)
        if not self.live:
            self.poll_now.set()

    def set_drop_acks(self, rate: float) -> None:
        self.drop_acks = rate

    def finish(self) -> None:
        """A last poll and page load (as a user who comes back), then stop."""
        self.poll()
        self.load_page()
        self.stopping.set()
        self.poll_now.set()
        try:
            if self.sio is not None:
                self.sio.disconnect()
        except Exception:
            pass


class Sender:
    """Sends through routes of the app that call ``notify.send()`` (or a raw emit, for the
    throughput anchor), each title a unique marker, spread over the workers."""

    def __init__(self, bases: list[str], run: str, token: str) -> None:
        self.run = run
        self.token = token
        self.bases = bases
        self.local = threading.local()
        self.sent: dict[str, tuple[str, float]] = {}
        self.refused = 0
        #: why requests were refused: an HTTP status, or the exception's class
        self.refusals: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.seq = 0

    def _post(self, base: str, path: str, form: dict[str, Any]) -> int:
        """POST a form over this thread's kept connection to ``base``; the reply's status.

        ``http.client`` rather than ``requests``: the load generator shares the machine with
        what it measures, and its cost per request grows with the rate offered; requests'
        would take a good part of a CPU from the servers at the overload rates."""
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        conn = conns.get(base)
        if conn is None:
            parts = urllib.parse.urlsplit(base)
            conn = conns[base] = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request("POST", path, body=urllib.parse.urlencode(form),
                         headers={"X-Chaos-Token": self.token,
                                  "Content-Type": "application/x-www-form-urlencoded"})
            reply = conn.getresponse()
            reply.read()
            return reply.status
        except BaseException:
            conn.close()
            del conns[base]
            raise

    def serve(self, jobs: "queue.Queue[str | None]", raw: bool = False) -> None:
        """A sender thread's loop: send to each user id taken from ``jobs`` until a None."""
        while True:
            uid = jobs.get()
            if uid is None:
                return
            self.send(uid, raw=raw)

    def send(self, user_id: str, raw: bool = False) -> bool:
        with self.lock:
            seq = self.seq = next(SEQUENCE)
        marker = f"chaos:{self.run}:{seq}"
        base = self.bases[seq % len(self.bases)]
        at = time.time()
        try:
            if raw:
                status = self._post(base, "/chaos/raw-emit", {"user_id": user_id, "title": marker, "seq": seq})
                ok = status == 204
            else:
                status = self._post(base, "/chaos/send", {"user_id": user_id, "title": marker})
                ok = status == 201
        except (OSError, http.client.HTTPException) as exc:
            ok, why = False, type(exc).__name__
        else:
            why = str(status)
        with self.lock:
            if ok:
                self.sent[marker] = (user_id, at)
            else:
                self.refused += 1
                self.refusals[why] += 1
        return ok

"""A rollback and a restore on a real cluster: two app processes on one MariaDB or PostgreSQL
database and one Redis. Users keep receiving every notification sent before, during and
after, exactly once, by flash and by polling."""

from __future__ import annotations

import collections
import html
import json
import re
import threading
from typing import Any

import pytest
import requests

from tests.conftest import user_id
from tests.support.apps import ServedApp, build_example, drop_tables
from tests.support.databases import own_database
from tests.support.rollback import cli
from tests.support.services import free_port, wait_until

FLASH = re.compile(r'<div class="flash [a-z]+" role="status">(.*?)</div>', re.S)
SETTINGS = re.compile(r'<script type="application/json" id="notify-emergency-settings">(.*?)</script>', re.S)


def _session(base: str, name: str) -> requests.Session:
    s = requests.Session()
    r = s.post(f"{base}/login", data={"username": name, "password": name}, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    return s


class Mailbox:
    """What one user received, by flash on GET / or through the poll endpoint."""

    def __init__(self, name: str, session: requests.Session, bases: list[str], poll: bool) -> None:
        self.name, self.session, self.bases, self.poll = name, session, bases, poll
        self.titles: list[str] = []
        self.turn = 0

    def _page(self, base: str) -> str:
        r = self.session.get(f"{base}/", timeout=10)
        assert r.status_code == 200, r.text
        self.titles += [html.unescape(m).split(": ", 1)[0] for m in FLASH.findall(r.text)]
        return r.text

    def check(self) -> None:
        base = self.bases[self.turn % len(self.bases)]
        self.turn += 1
        if not self.poll or self.turn % 3 == 0:
            self._page(base)
            return
        settings = SETTINGS.search(self._page(base))
        assert settings is not None
        token = json.loads(html.unescape(settings.group(1)))["csrfToken"]
        r = self.session.post(f"{base}/emergency/api/notifications/poll", headers={"X-CSRF-Token": token},
                              timeout=10)
        assert r.status_code == 200, r.text
        self.titles += [n["title"] for n in r.json()["notifications"]]


def _mode_everywhere(bases: list[str], mode: str) -> bool:
    return all(requests.get(f"{b}/emergency/api/banners", timeout=5).json()["mode"] == mode for b in bases)


@pytest.mark.slow
@pytest.mark.parametrize("kind,server", [("mariadb", "werkzeug"), ("postgres", "werkzeug"),
                                         ("mariadb", "gunicorn-threads"), ("postgres", "gunicorn-threads"),
                                         ("mariadb", "gunicorn-gevent"), ("postgres", "gunicorn-gevent")])
def test_nothing_is_lost_or_doubled_across_rollback_and_restore(kind, server, redis_url, redis_prefix, tmp_path):
    with own_database(kind) as url:
        config = {"SQLALCHEMY_DATABASE_URI": url, "NOTIFY_EMERGENCY_REDIS_URL": redis_url,
                  "NOTIFY_EMERGENCY_REDIS_KEY_PREFIX": redis_prefix, "NOTIFY_EMERGENCY_STATE_BACKEND": "redis",
                  "NOTIFY_EMERGENCY_BACKUP_DIR": str(tmp_path / "backups"), "NOTIFY_EMERGENCY_TEST_USER_ID": "1"}
        app, _ = build_example(config)  # creates the tables and users once, before the workers start
        try:
            with ServedApp(free_port(), config, server=server) as one, \
                    ServedApp(free_port(), config, server=server) as two:
                _exercise(app, [one.url, two.url])
        finally:
            drop_tables(app)


def _exercise(app: Any, bases: list[str]) -> None:
    ids = {name: user_id(app, name) for name in ("alice", "bob")}
    senders = [_session(b, "admin") for b in bases]
    boxes = {"alice": Mailbox("alice", _session(bases[0], "alice"), bases, poll=False),
             "bob": Mailbox("bob", _session(bases[1], "bob"), bases[::-1], poll=True)}
    sent: dict[str, list[str]] = {"alice": [], "bob": []}
    lock = threading.Lock()

    def send(phase: str, n: int) -> None:
        for name in ("alice", "bob"):
            title = f"{name}-{phase}-{n}"
            r = senders[n % 2].post(f"{bases[n % 2]}/send", data={"user_id": ids[name], "title": title,
                                                                  "message": "m"}, allow_redirects=False, timeout=10)
            assert r.status_code == 302, r.text
            with lock:
                sent[name].append(title)

    def check_all() -> None:
        for box in boxes.values():
            box.check()

    for n in range(4):
        send("before", n)
    check_all()

    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_sending() -> None:
        n = 0
        try:
            while not stop.is_set() or n < 3:
                send("during", n)
                n += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    rolled = cli(app, "rollback", "--reason", "socket queue lost", "--confirm")
    stop.set()
    sender.join(timeout=60)
    assert not errors, errors
    assert rolled.exit_code == 0, rolled.output
    wait_until(lambda: _mode_everywhere(bases, "legacy"), timeout=20, message="both workers in legacy mode")

    page = boxes["alice"].session.get(f"{bases[1]}/", timeout=10).text
    boxes["alice"].titles += [html.unescape(m).split(": ", 1)[0] for m in FLASH.findall(page)]
    assert "Live notifications are paused" in page
    verified = cli(app, "verify-rollback", "--json", "--timeout", "20")
    assert verified.exit_code == 0, verified.output
    workers = {c["name"]: c for c in json.loads(verified.output)["checks"]}["workers"]["workers"]
    assert len(workers) == 2 and {w["mode"] for w in workers} == {"legacy"}

    for n in range(4):
        send("rolled-back", n)
    check_all()

    restored = cli(app, "restore", "--confirm")
    assert restored.exit_code == 0, restored.output
    wait_until(lambda: _mode_everywhere(bases, "normal"), timeout=20, message="both workers back to normal")
    for n in range(4):
        send("restored", n)

    def everything_arrived() -> bool:
        check_all()
        return all(len(boxes[u].titles) >= len(sent[u]) for u in sent)

    wait_until(everything_arrived, timeout=90, interval=0.05, message="every notification to arrive")
    check_all()  # nothing more may come
    for name in sent:
        received = collections.Counter(boxes[name].titles)
        assert received == collections.Counter(sent[name]), name
        assert max(received.values()) == 1

"""Polling that cannot stampede: the server sets the interval (raised in emergency mode and under
load, up to a ceiling) and a phase for each page's next poll; the shipped client script
follows both, jitters every delay and spreads the first poll after a mode change.

* the poll, banners and page replies carry the interval the server wants;
* a page in Chromium follows it (``window.notifyEmergency.pollSchedule()``);
* 1,000 pages switching to polling at once, scheduled by ``static/client.js``'s own schedule
  and answered by a served app, poll no faster than 1.2x their average rate after the first
  interval (``poll_herd.js`` in Node; the same measure sees the herd of a client without it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from typing import Any, Iterator

import pytest
import requests

from flask_notify_emergency.delivery import polling
from tests.conftest import login
from tests.support.apps import ROOT, ServedApp, quick_config
from tests.support.browser import log_in
from tests.support.pages import BANNERS_URL, NAMESPACE, client_settings, csrf_from_page, poll, received
from tests.support.services import free_port, wait_until

HERD_JS = os.path.join(os.path.dirname(__file__), "poll_herd.js")
CLIENT_JS = os.path.join(ROOT, "static", "client.js")
PAGES = 1000


def ext_of(app: Any) -> Any:
    return app.extensions["notify_emergency"]


def test_the_server_raises_the_interval_in_emergency_mode_and_under_load_up_to_the_ceiling(make_app):
    app, socketio = make_app(NOTIFY_EMERGENCY_POLL_INTERVAL=4.0, NOTIFY_EMERGENCY_POLL_BACKOFF_FACTOR=2.0,
                      NOTIFY_EMERGENCY_POLL_INTERVAL_MAX=20.0)
    ext = ext_of(app)
    client = app.test_client()
    login(client, "alice")
    token = csrf_from_page(client)

    def served() -> tuple[float, float, float]:
        reply = poll(client, token).get_json()
        assert 0 <= reply["poll_phase"] < 1
        return (reply["poll_interval"], client.get(BANNERS_URL).get_json()["poll_interval"],
                client_settings(client.get("/").get_data(as_text=True))["pollInterval"])

    assert served() == (4.0, 4.0, 4.0)
    sio = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    ext.control.set_mode("emergency", "test")
    assert served() == (8.0, 8.0, 8.0)
    # the mode push tells every page the new interval, which it spreads its first poll over
    assert received(sio, "notify_emergency:mode") == [{"mode": "emergency", "poll_interval": 8.0}]
    sio.disconnect(namespace=NAMESPACE)
    ext.control.write(polling.LOAD_KEY, {"overloaded": True, "streak": 1}, "test")  # what the monitor writes
    assert served() == (16.0, 16.0, 16.0)
    ext.control.write(polling.LOAD_KEY, {"overloaded": True, "streak": 5}, "test")
    assert served() == (20.0, 20.0, 20.0)  # the ceiling
    ext.control.set_mode("normal", "test")
    ext.control.write(polling.LOAD_KEY, {"overloaded": False, "streak": 0}, "test")
    assert served() == (4.0, 4.0, 4.0)


def test_successive_phases_are_spread_evenly_over_the_jitter_window():
    phases = sorted(polling.poll_phase() for _ in range(200))
    gaps = [b - a for a, b in zip(phases, phases[1:])]
    assert max(gaps) < 3 / 200  # random phases would leave gaps of several times 1/200


def test_a_ceiling_under_the_interval_is_refused(make_app):
    from flask_notify_emergency.config import ConfigError

    with pytest.raises(ConfigError, match="POLL_INTERVAL_MAX .* is less than NOTIFY_EMERGENCY_POLL_INTERVAL"):
        make_app(NOTIFY_EMERGENCY_POLL_INTERVAL=10.0, NOTIFY_EMERGENCY_POLL_INTERVAL_MAX=5.0)


# -- the shipped client, in Chromium and in Node --------------------------------------------
@pytest.fixture
def served(make_app: Any, tmp_path: Any) -> Iterator[tuple[ServedApp, Any]]:
    """A served app and a local one on the same database (to switch the cluster's mode)."""
    config = quick_config(tmp_path, NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS=0.3, NOTIFY_EMERGENCY_POLL_INTERVAL=5.0,
                          NOTIFY_EMERGENCY_POLL_BACKOFF_FACTOR=2.0, NOTIFY_EMERGENCY_POLL_INTERVAL_MAX=60.0)
    local, _ = make_app(**config)
    app = ServedApp(free_port(), config, collect_output=True)  # read its log, or a full pipe stops it
    try:
        yield app, local
    finally:
        app.stop()


def wait_for_interval(url: str, interval: float) -> None:
    wait_until(lambda: requests.get(url + BANNERS_URL, timeout=5).json()["poll_interval"] == interval,
               timeout=15, message=f"the served app to ask for polls every {interval}s")


@pytest.mark.browser
@pytest.mark.slow
def test_a_page_follows_the_interval_the_server_sets(browser, make_app, tmp_path):
    config = quick_config(tmp_path, NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS=0.3, NOTIFY_EMERGENCY_POLL_INTERVAL=0.5,
                          NOTIFY_EMERGENCY_POLL_BACKOFF_FACTOR=2.0, NOTIFY_EMERGENCY_POLL_INTERVAL_MAX=2.0)
    local, _ = make_app(**config)
    ext = ext_of(local)
    served = ServedApp(free_port(), config, collect_output=True)  # read its log, or a full pipe stops it
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, served.url, "alice")
        page.wait_for_function("window.notifyEmergency && window.notifyEmergency.isLive()", timeout=15000)
        ext.control.set_mode("emergency", "test")  # every page polls now, every second at most
        ext.control.write(polling.LOAD_KEY, {"overloaded": True, "streak": 3}, "test")
        wait_for_interval(served.url, 2.0)
        # the page learns it from its next poll reply and schedules by it, jittered
        page.wait_for_function("window.notifyEmergency.pollSchedule().interval === 2", timeout=15000)
        delays = set()
        for _ in range(3):
            schedule = page.evaluate("window.notifyEmergency.pollSchedule()")
            assert schedule["interval"] == 2
            assert 1000 <= schedule["nextDelayMs"] <= 3000, schedule  # 2s +- 50%
            delays.add(schedule["nextDelayMs"])
            page.wait_for_function(f"window.notifyEmergency.pollSchedule().nextDelayMs !== {schedule['nextDelayMs']}",
                                   timeout=15000)
        assert len(delays) == 3  # jittered: no two alike

        ext.control.write(polling.LOAD_KEY, {"overloaded": False, "streak": 0}, "test")
        ext.control.set_mode("normal", "test")
        wait_for_interval(served.url, 0.5)
        # back to normal with a live socket: a safety-net poll at six times the interval
        page.wait_for_function("window.notifyEmergency.pollSchedule().interval === 0.5 && "
                               "window.notifyEmergency.pollSchedule().nextDelayMs >= 1500", timeout=15000)
    finally:
        context.close()
        served.stop()


def run_herd(served: ServedApp, until: float, pages: int = PAGES, variant: str = "") -> dict[str, Any]:
    url = served.url
    session = served.session_as("alice")
    csrf = client_settings(session.get(url + "/", timeout=10).text)["csrfToken"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    out = subprocess.run(["node", HERD_JS, CLIENT_JS, url, cookie, csrf, str(pages), str(until), "7", variant],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def peak_over_average(polls: list[float], interval: float, until: float) -> tuple[float, int, float]:
    """Polls per second after the first interval: the busiest second against the average."""
    after = [t for t in polls if interval <= t < until]
    per_second = Counter(int(t) for t in after)
    seconds = range(int(interval), int(until))
    average = len(after) / len(seconds)
    peak = max(per_second.get(s, 0) for s in seconds)
    return peak / average, peak, average


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_a_thousand_pages_switching_to_polling_at_once_do_not_stampede(served):
    app, local = served
    ext_of(local).control.set_mode("emergency", "test")
    wait_for_interval(app.url, 10.0)  # emergency mode: POLL_INTERVAL raised one step
    until = 4 * 10.0

    herd = run_herd(app, until)
    assert herd["mode"] == "emergency" and herd["intervals"] == [10.0]
    ratio, peak, average = peak_over_average(herd["polls"], 10.0, until)
    assert average > 0.8 * PAGES / 10.0, average  # every page keeps polling about once an interval
    assert ratio <= 1.2, (peak, average)
    # the first interval itself: the mode change spread the first polls, no second is a spike
    first = Counter(int(t) for t in herd["polls"] if t < 10.0)
    assert max(first.values()) <= 1.5 * sum(first.values()) / 10, first
    print(f"\nafter the first interval: peak {peak}/s, average {average:.1f}/s, ratio {ratio:.3f}; "
          f"first interval per second: {[first.get(s, 0) for s in range(10)]}")

    # the same measure, a client that polls every interval on the dot: the herd comes back each time
    ratio, peak, average = peak_over_average(run_herd(app, 3 * 10.0, 200, "herd")["polls"], 10.0, 3 * 10.0)
    assert ratio > 5, (peak, average)
    print(f"a client without jitter or spread: peak {peak}/s, average {average:.1f}/s, ratio {ratio:.3f}")

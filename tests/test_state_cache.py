"""The in-process state cache and its refresh from the database."""

from __future__ import annotations

import threading

from flask_notify_emergency.state import SharedState


def test_a_switch_set_during_a_refresh_is_not_overwritten_by_the_older_read():
    state: SharedState

    def loader():
        read = ({"mode": "normal"}, set())  # what the database said when the read began
        state.set("mode", "emergency")      # a newer change lands while the read is under way
        return read

    state = SharedState(loader, refresh_seconds=3600)
    state.refresh()
    assert state.get("mode") == "emergency"


def test_a_refresh_applies_what_changed_elsewhere_and_tells_listeners():
    stored = {"mode": "normal"}
    state = SharedState(lambda: (dict(stored), {"7"}), refresh_seconds=3600)
    seen: list[tuple[str, object]] = []
    state.on_change(lambda key, value: seen.append((key, value)))
    state.refresh()
    stored["mode"] = "legacy"  # written by another process, e.g. the CLI
    state.refresh()
    assert state.get("mode") == "legacy"
    assert ("mode", "legacy") in seen
    assert state.may_have_pending("7")


def test_only_one_thread_reads_the_database_at_a_time():
    entered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def slow_loader():
        calls.append(1)
        entered.set()
        release.wait(5)
        return {}, set()

    state = SharedState(slow_loader, refresh_seconds=3600)
    first = threading.Thread(target=state.refresh)
    first.start()
    assert entered.wait(5)
    state.refresh()  # returns at once: the first thread is reading
    release.set()
    first.join(5)
    assert calls == [1]

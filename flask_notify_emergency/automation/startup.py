"""What a serving worker starts: the acknowledgement sweeper, the monitor, and whatever else
registers here.

With ``START_ON_BOOT`` (the default) it starts when ``init_app`` is done, in any process that
is not a ``flask`` command: a served app (Flask-SocketIO's server, gunicorn, uWSGI) watches
the system from boot, before any traffic. ``flask ...`` commands (Flask sets
``FLASK_RUN_FROM_CLI``) never start it, so ``flask emergency status`` starts no threads;
under ``flask run``, and with ``START_ON_BOOT = False``, it starts on the first real request
instead. Synthetic requests (the CLI's own page checks) never start it.

With gunicorn's ``--preload`` the app is created in the master before it forks, and threads
do not survive a fork: each worker starts its own again after the fork.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Callable

import click

from ..access import is_synthetic


def in_flask_command() -> bool:
    """True in a process started as ``flask <command>`` (Flask sets this before loading the app)."""
    return os.environ.get("FLASK_RUN_FROM_CLI") == "true"


def inside_cli_command() -> bool:
    """True inside a ``flask <command>`` other than ``run`` (e.g. ``flask emergency ...``)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.info_name != "run"


class WorkerStart:
    """Runs each registered starter once per process: at boot, or on the first real request."""

    def __init__(self) -> None:
        self._starters: list[Callable[[], None]] = []
        self._started = threading.Event()
        self._pid: int | None = None

    def add(self, starter: Callable[[], None]) -> None:
        self._starters.append(starter)

    @property
    def started(self) -> bool:
        return self._started.is_set()

    def boot(self) -> bool:
        """Start now, as the app is created, unless this is a ``flask`` command; True if started."""
        if in_flask_command():
            return False
        _booted.add(self)
        return self.start()

    def start(self) -> bool:
        """Run every starter, once per process; True if they ran now."""
        if self._started.is_set():
            return False
        self._started.set()
        self._pid = os.getpid()
        for starter in self._starters:
            starter()
        return True

    def _after_fork(self) -> None:
        # a forked worker (gunicorn --preload) has none of its parent's threads: start its own
        if self._started.is_set() and getattr(self, "_pid", None) != os.getpid():
            self._started.clear()
            threading.Thread(target=self.start, name="notify-emergency-boot", daemon=True).start()

    def before_request(self) -> None:
        if self._started.is_set():
            return
        from flask import request

        if is_synthetic(request.environ) or inside_cli_command():
            return
        self.start()


#: Every WorkerStart started at boot in this process, to restart in a forked child.
_booted: "weakref.WeakSet[WorkerStart]" = weakref.WeakSet()


def _restart_after_fork() -> None:
    for worker_start in list(_booted):
        worker_start._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_after_fork)

"""What a serving worker starts on its first real request: the acknowledgement sweeper,
the monitor, and whatever else registers here.

Started lazily rather than in ``init_app`` so that ``flask emergency ...`` commands and the
synthetic requests of the CLI's page checks never start background threads.
"""

from __future__ import annotations

import threading
from typing import Callable

import click

from ..access import is_synthetic


def inside_cli_command() -> bool:
    """True inside a ``flask <command>`` other than ``run`` (e.g. ``flask emergency ...``)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.info_name != "run"


class WorkerStart:
    """Runs each registered starter once, on the first real request this worker serves."""

    def __init__(self) -> None:
        self._starters: list[Callable[[], None]] = []
        self._started = threading.Event()

    def add(self, starter: Callable[[], None]) -> None:
        self._starters.append(starter)

    @property
    def started(self) -> bool:
        return self._started.is_set()

    def before_request(self) -> None:
        if self._started.is_set():
            return
        from flask import request

        if is_synthetic(request.environ) or inside_cli_command():
            return
        self._started.set()
        for starter in self._starters:
            starter()

"""The audit log: every admin action, from the dashboard or the CLI, is written here."""

from __future__ import annotations

import getpass
import logging
import os
from typing import Any, Callable

from .models import Models, utcnow

REDACT = ("password", "secret", "token", "csrf")
log = logging.getLogger("flask_notify_emergency")


def _clean(arguments: dict[str, Any] | None) -> dict[str, Any] | None:
    if arguments is None:
        return None
    return {k: ("***" if any(w in k.lower() for w in REDACT) else v) for k, v in arguments.items()}


class AuditLog:
    """Appends audit entries through the host's engine (never the host's session)."""

    def __init__(self, engine: Any, models: Models) -> None:
        self.engine = engine
        self.table = models.AuditEntry.__table__
        #: called with each new entry's id once it is committed (in the process that wrote it),
        #: e.g. to push the admins' live overview, which shows the newest entries
        self.listeners: list[Callable[[int], None]] = []

    def record(self, actor: str, action: str, source: str, arguments: dict[str, Any] | None = None,
               outcome: str = "ok", detail: str | None = None, event_id: int | None = None) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(self.table.insert().values(
                at=utcnow(), actor=actor[:128], action=action[:64], source=source[:64],
                arguments=_clean(arguments), outcome=outcome[:16], detail=detail, event_id=event_id))
        entry_id = int(result.inserted_primary_key[0])
        for listener in list(self.listeners):
            try:
                listener(entry_id)
            except Exception as exc:  # the entry is written; a listener never undoes that
                log.warning("flask-notify-emergency: audit listener %r failed: %s", listener, exc)
        return entry_id


def cli_actor() -> str:
    """Who runs a CLI command: the OS user (and sudo's caller, when there is one)."""
    user = getpass.getuser()
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo and sudo != user else user


def request_source() -> str:
    """Where a web action came from."""
    from flask import request

    return f"web {request.remote_addr or '?'}"

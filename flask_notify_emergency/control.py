"""Cluster-wide switches (delivery mode, paused services, ...): the database holds the
truth, :mod:`.state` caches it in every worker and spreads changes."""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa

from . import signals
from .config import MODES
from .models import Models, utcnow

#: Switches every worker caches. Anything else stays in the database only.
CACHED_KEYS = ("mode", "paused", "breaker", "banners_version", "fallbacks", "cluster_action", "drill_fault")


class Control:
    """Reads and writes switches: database first, then the shared state."""

    def __init__(self, app: Any, engine: sa.engine.Engine, models: Models, state: Any) -> None:
        self.app = app
        self.engine = engine
        self.table = models.ControlState.__table__
        self.state = state

    def load(self) -> dict[str, Any]:
        """Every cached switch as stored in the database."""
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.key, t.c.value).where(t.c.key.in_(CACHED_KEYS))).all()
        return {key: value for key, value in rows}

    def read(self, key: str, default: Any = None) -> Any:
        """A switch straight from the database (for the CLI and checks)."""
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.value).where(t.c.key == key)).first()
        return default if row is None else row[0]

    def write(self, key: str, value: Any, actor: str | None = None) -> None:
        """Store a switch, then tell every worker."""
        t = self.table
        now = utcnow()
        with self.engine.begin() as conn:
            updated = conn.execute(t.update().where(t.c.key == key)
                                   .values(value=value, updated_at=now, updated_by=actor)).rowcount
            if not updated:
                try:
                    with conn.begin_nested():
                        conn.execute(t.insert().values(key=key, value=value, updated_at=now, updated_by=actor))
                except sa.exc.IntegrityError:  # another worker inserted it first
                    conn.execute(t.update().where(t.c.key == key)
                                 .values(value=value, updated_at=now, updated_by=actor))
        if key in CACHED_KEYS:
            self.state.set(key, value)

    # -- locks with an expiry (when there is no Redis to hold them) ------------------------
    def acquire_lock(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lock ``name`` for ``holder`` until ``ttl`` seconds from now.

        The row ``lock:<name>`` holds ``{"holder", "expires"}`` (wall-clock seconds); a
        renewal or a takeover is a compare-and-swap on ``updated_by``, a fresh token each
        write, so two processes racing for an expired lock cannot both win.
        """
        t = self.table
        key = f"lock:{name}"
        now = time.time()
        value = {"holder": holder, "expires": now + ttl}
        token = f"{holder[:100]} {uuid.uuid4().hex[:16]}"
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.c.value, t.c.updated_by).where(t.c.key == key)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(t.insert().values(key=key, value=value, updated_at=utcnow(), updated_by=token))
                    return True
                except sa.exc.IntegrityError:  # another process created it first
                    return False
            current = row[0] if isinstance(row[0], dict) else {}
            if current.get("holder") != holder and float(current.get("expires") or 0) > now:
                return False
            swapped = conn.execute(t.update().where(t.c.key == key, t.c.updated_by == row[1])
                                   .values(value=value, updated_at=utcnow(), updated_by=token)).rowcount
            return bool(swapped)

    def release_lock(self, name: str, holder: str) -> None:
        """Give the lock up, if ``holder`` still holds it."""
        t = self.table
        key = f"lock:{name}"
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.c.value, t.c.updated_by).where(t.c.key == key)).first()
            if row is not None and isinstance(row[0], dict) and row[0].get("holder") == holder:
                conn.execute(t.delete().where(t.c.key == key, t.c.updated_by == row[1]))

    # -- the delivery mode ---------------------------------------------------------------
    @property
    def mode(self) -> str:
        return str(self.state.get("mode", "normal") or "normal")

    def set_mode(self, mode: str, actor: str) -> str:
        """Switch the cluster's delivery mode; return the previous one."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
        old = self.read("mode", "normal") or "normal"
        self.write("mode", mode, actor)
        if old != mode:
            signals.mode_changed.send(self.app, old=old, new=mode, actor=actor)
        return str(old)

    def paused(self) -> dict[str, bool]:
        return dict(self.state.get("paused") or {})

    def set_paused(self, service: str, paused: bool, actor: str) -> None:
        current = dict(self.read("paused", {}) or {})
        current[service] = paused
        self.write("paused", current, actor)

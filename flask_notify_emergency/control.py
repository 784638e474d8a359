"""Cluster-wide switches (delivery mode, paused services, ...): the database holds the
truth, :mod:`.state` caches it in every worker and spreads changes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import signals
from .config import MODES
from .models import Models, utcnow

#: Switches every worker caches. Anything else stays in the database only.
CACHED_KEYS = ("mode", "paused", "breaker", "banners_version", "fallbacks", "cluster_action")


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

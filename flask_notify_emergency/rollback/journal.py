"""The rollback journal and the operation lock.

Every rollback or restore is one *operation* with an id; each thing it does is written to
the ``notify_emergency_rollback_step`` table as it happens::

    operation_id  operation  step            status
    rb-...        rollback   begin           started   (detail: reason, actor, source, planned)
    rb-...        rollback   pause-realtime  started
    rb-...        rollback   pause-realtime  done      (detail: what the step found and did)
    ...
    rb-...        rollback   end             done      (or failed; the row metrics read)

A ``resume`` row (status ``done``) marks where a later run continued an interrupted one.

An operation with a ``begin`` row and no ``end`` row is *unfinished* (its process died):
running the same command again continues it. Only one operation runs at a time, guarded by
:class:`OperationLock`, a row of the control table that names its holder (host and pid), so
a holder killed with SIGKILL is recognised as gone and the lock taken over at once.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from typing import Any, Iterable

import sqlalchemy as sa

from ..models import Models, utcnow

BEGIN, END, RESUME = "begin", "end", "resume"
STARTED, DONE, FAILED, REVERTED = "started", "done", "failed", "reverted"
LOCK_KEY = "rollback_lock"
LOCK_TTL = dt.timedelta(minutes=10)


def iso(value: dt.datetime | None) -> str | None:
    """Naive UTC time as ISO text with a 'Z'."""
    return value.isoformat() + "Z" if value else None


class Journal:
    """Appends and reads journal rows through the host's engine."""

    def __init__(self, engine: sa.engine.Engine, models: Models) -> None:
        self.engine = engine
        self.table = models.RollbackStep.__table__

    @staticmethod
    def new_operation_id(operation: str) -> str:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        return f"{'rb' if operation == 'rollback' else 'rs'}-{stamp}-{uuid.uuid4().hex[:8]}"

    def record(self, operation_id: str, operation: str, step: str, status: str, actor: str | None,
               detail: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.insert().values(
                operation_id=operation_id, operation=operation, step=step, status=status,
                at=utcnow(), actor=(actor or "")[:128] or None, detail=detail))

    def rows(self, operation_id: str) -> list[dict[str, Any]]:
        t = self.table
        with self.engine.connect() as conn:
            result = conn.execute(sa.select(t).where(t.c.operation_id == operation_id).order_by(t.c.id))
            return [dict(r._mapping) for r in result]

    def summary(self, operation_id: str) -> dict[str, Any] | None:
        """One operation: who, why, when, its steps and its outcome (``in-progress`` if no end)."""
        rows = self.rows(operation_id)
        if not rows:
            return None
        begin = next((r for r in rows if r["step"] == BEGIN), rows[0])
        end = next((r for r in reversed(rows) if r["step"] == END), None)
        info = dict(begin.get("detail") or {})
        steps: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["step"] in (BEGIN, END, RESUME):
                continue
            entry = steps.setdefault(r["step"], {"step": r["step"]})
            entry["status"] = r["status"]
            entry[f"{r['status']}_at"] = iso(r["at"])
            if r["detail"] is not None:
                entry["detail"] = r["detail"]
        duration = (end["at"] - begin["at"]).total_seconds() if end else None
        return {
            "operation_id": operation_id, "operation": begin["operation"],
            "status": end["status"] if end else "in-progress",
            "actor": begin["actor"], "reason": info.get("reason"), "source": info.get("source"),
            "planned": bool(info.get("planned")), "request_id": info.get("request_id"),
            "started_at": iso(begin["at"]), "ended_at": iso(end["at"]) if end else None,
            "duration_seconds": duration, "result": (end or {}).get("detail"),
            "steps": list(steps.values()),
            "done_steps": [name for name, s in steps.items() if s["status"] == DONE],
            "resumed": [{"at": iso(r["at"]), "actor": r["actor"]} for r in rows if r["step"] == RESUME],
            "timeline": [{"at": iso(r["at"]), "step": r["step"], "status": r["status"],
                          "actor": r["actor"], "detail": r["detail"]} for r in rows],
        }

    def unfinished(self) -> dict[str, Any] | None:
        """The newest operation that began and never ended, if any."""
        t = self.table
        ended = sa.select(t.c.operation_id).where(t.c.step == END)
        q = (sa.select(t.c.operation_id).where(t.c.step == BEGIN, t.c.operation_id.not_in(ended))
             .order_by(t.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return self.summary(row[0]) if row else None

    def latest(self, operation: str | None = None) -> dict[str, Any] | None:
        """The newest operation (of one kind, if given)."""
        t = self.table
        q = sa.select(t.c.operation_id).where(t.c.step == BEGIN)
        if operation:
            q = q.where(t.c.operation == operation)
        with self.engine.connect() as conn:
            row = conn.execute(q.order_by(t.c.id.desc()).limit(1)).first()
        return self.summary(row[0]) if row else None

    def operations(self, limit: int = 20) -> list[dict[str, Any]]:
        t = self.table
        q = sa.select(t.c.operation_id).where(t.c.step == BEGIN).order_by(t.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(q)]
        return [s for s in (self.summary(i) for i in ids) if s is not None]

    def success_rate(self, since: dt.datetime | None, operations: Iterable[str]) -> float | None:
        """Share of operations ended since ``since`` whose final row is ``done``."""
        t = self.table
        q = sa.select(t.c.status, sa.func.count()).where(
            t.c.step == END, t.c.status.in_((DONE, FAILED)), t.c.operation.in_(tuple(operations)))
        if since is not None:
            q = q.where(t.c.at >= since)
        with self.engine.connect() as conn:
            counts = {status: int(n) for status, n in conn.execute(q.group_by(t.c.status))}
        total = sum(counts.values())
        return None if total == 0 else counts.get(DONE, 0) / total


class RollbackInProgress(Exception):
    """Another live process holds the operation lock."""

    def __init__(self, holder: dict[str, Any]) -> None:
        self.holder = holder
        super().__init__(
            f"a {holder.get('operation', 'rollback')} is in progress (operation "
            f"{holder.get('operation_id')}, process {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('since')}): wait for it to finish, or stop that process and run "
            "the command again to continue its operation.")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: gone for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def holder_alive(holder: dict[str, Any] | None) -> bool:
    """Whether a lock holder still runs: same host -> its pid; other hosts -> until expiry."""
    if not holder:
        return False
    expires = holder.get("expires_at")
    if expires and dt.datetime.fromisoformat(str(expires).rstrip("Z")) < utcnow():
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return _process_alive(holder["pid"])
    return True


class OperationLock:
    """One rollback/restore at a time across the cluster: a compare-and-set control row."""

    def __init__(self, engine: sa.engine.Engine, models: Models) -> None:
        self.engine = engine
        self.table = models.ControlState.__table__
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:128]

    def holder(self) -> dict[str, Any] | None:
        """The current holder, if it is alive."""
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.value).where(t.c.key == LOCK_KEY)).first()
        value = row[0] if row else None
        return value if holder_alive(value) else None

    def acquire(self, operation: str, operation_id: str | None) -> None:
        """Take the lock or raise :class:`RollbackInProgress`."""
        t = self.table
        now = utcnow()
        value = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                 "operation": operation, "operation_id": operation_id, "since": iso(now),
                 "expires_at": iso(now + LOCK_TTL)}
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.c.value, t.c.updated_at, t.c.updated_by)
                               .where(t.c.key == LOCK_KEY)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(t.insert().values(key=LOCK_KEY, value=value, updated_at=now,
                                                       updated_by=self.token))
                    return
                except sa.exc.IntegrityError:
                    row = conn.execute(sa.select(t.c.value, t.c.updated_at, t.c.updated_by)
                                       .where(t.c.key == LOCK_KEY)).first()
            assert row is not None
            if holder_alive(row.value) and (row.value or {}).get("token") != self.token:
                raise RollbackInProgress(row.value)
            # compare-and-set: only one of several racing processes replaces the old holder
            won = conn.execute(t.update().where(
                t.c.key == LOCK_KEY, t.c.updated_by == row.updated_by, t.c.updated_at == row.updated_at,
            ).values(value=value, updated_at=now, updated_by=self.token)).rowcount
        if not won:
            raise RollbackInProgress(self.holder() or {"operation": operation})

    def release(self) -> None:
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.key == LOCK_KEY, t.c.updated_by == self.token))

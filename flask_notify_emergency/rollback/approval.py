"""The two-person rule for planned rollbacks.

An emergency rollback needs one admin (or the operator at the CLI). A *planned* rollback is
first requested by one admin, then approved by ``NOTIFY_EMERGENCY_PLANNED_ROLLBACK_APPROVALS``
other admins, then executed with the request's id. A request lives in the control table
under ``rollback_request:<id>`` (JSON: reason, requested_by, approvals, status, expiry) so
every worker and the CLI see the same one; every step is written to the audit log.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa

from ..audit import cli_actor
from ..models import utcnow

KEY_PREFIX = "rollback_request:"
#: an approval is for a rollback soon, not one next month
VALID_FOR = dt.timedelta(hours=24)


class RollbackError(Exception):
    """A rollback action was refused or failed; the message says why and what to do."""


def _same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _who(source: str) -> dict[str, str]:
    """At the CLI names are typed; the audit entry also keeps the OS user who typed them."""
    return {"os_user": cli_actor()} if source == "cli" else {}


def required_approvals(ext: Any) -> int:
    return int(ext.app.config["NOTIFY_EMERGENCY_PLANNED_ROLLBACK_APPROVALS"])


def _table(ext: Any) -> sa.Table:
    return ext.models.ControlState.__table__


def get_request(ext: Any, request_id: str) -> dict[str, Any] | None:
    value = ext.control.read(KEY_PREFIX + request_id.strip())
    return dict(value) if isinstance(value, dict) else None


def list_requests(ext: Any, include_closed: bool = False) -> list[dict[str, Any]]:
    t = _table(ext)
    with ext.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.value).where(t.c.key.like(KEY_PREFIX + "%"))).all()
    out = [dict(r[0]) for r in rows if isinstance(r[0], dict)]
    if not include_closed:
        out = [r for r in out if r.get("status") in ("pending", "approved") and not _expired(r)]
    return sorted(out, key=lambda r: r.get("requested_at") or "", reverse=True)


def _expired(req: dict[str, Any]) -> bool:
    return dt.datetime.fromisoformat(str(req["expires_at"]).rstrip("Z")) < utcnow()


def request_rollback(ext: Any, *, reason: str, requested_by: str, source: str) -> dict[str, Any]:
    """Open a planned-rollback request; return it (``id`` is what approvers quote)."""
    if not isinstance(reason, str) or not reason.strip():
        raise RollbackError('a planned rollback needs a reason: --reason "why we roll back".')
    if not isinstance(requested_by, str) or not requested_by.strip():
        raise RollbackError("say who requests it: --requested-by NAME.")
    now = utcnow()
    request_id = f"rq-{uuid.uuid4().hex[:10]}"
    # the same JSON shape every other function here reads back from the control table
    req: dict[str, Any] = {
        "id": request_id, "reason": reason.strip(), "requested_by": requested_by.strip(),
        "requested_at": now.isoformat() + "Z", "expires_at": (now + VALID_FOR).isoformat() + "Z",
        "approvals": [], "required": required_approvals(ext), "status": "pending", "operation_id": None}
    if req["required"] == 0:
        req["status"] = "approved"
    ext.control.write(KEY_PREFIX + request_id, req, requested_by)
    ext.audit.record(requested_by, "request-rollback", source,
                     {"request_id": request_id, "reason": reason, "planned": True, **_who(source)})
    return req


def approve_rollback(ext: Any, request_id: str, *, approved_by: str, source: str) -> dict[str, Any]:
    """Add one approval; refused for the requester, a repeat approver, or a closed request."""
    args = {"request_id": request_id, "approved_by": approved_by, **_who(source)}

    def refuse(message: str) -> RollbackError:
        ext.audit.record(approved_by or "?", "approve-rollback", source, args, outcome="refused", detail=message)
        return RollbackError(message)

    if not isinstance(approved_by, str) or not approved_by.strip():
        raise refuse("say who approves: --approved-by NAME.")
    t = _table(ext)
    key = KEY_PREFIX + request_id.strip()
    with ext.engine.begin() as conn:
        # row lock: two admins approving at the same moment both count
        row = conn.execute(sa.select(t.c.value).where(t.c.key == key).with_for_update()).first()
        req = dict(row[0]) if row and isinstance(row[0], dict) else None
        if req is None:
            raise refuse(f"no rollback request {request_id!r}: see 'rollback-requests'.")
        if req["status"] not in ("pending", "approved") or _expired(req):
            raise refuse(f"request {request_id} is {req['status'] if not _expired(req) else 'expired'}; "
                         "open a new one with 'request-rollback --planned'.")
        if _same_person(req["requested_by"], approved_by):
            raise refuse(f"{approved_by} requested this rollback and cannot approve it: a second "
                         "administrator must approve a planned rollback.")
        if any(_same_person(a["by"], approved_by) for a in req["approvals"]):
            raise refuse(f"{approved_by} has already approved request {request_id}.")
        req["approvals"].append({"by": approved_by.strip(), "at": utcnow().isoformat() + "Z", "source": source})
        if len(req["approvals"]) >= req["required"]:
            req["status"] = "approved"
        conn.execute(t.update().where(t.c.key == key).values(value=req, updated_at=utcnow(),
                                                               updated_by=approved_by[:128]))
    ext.audit.record(approved_by, "approve-rollback", source, dict(args, status=req["status"]))
    return req


def check_approved(ext: Any, request_id: str | None) -> dict[str, Any]:
    """The approved request a planned rollback runs under, or :class:`RollbackError`."""
    if required_approvals(ext) == 0 and request_id is None:
        return {"id": None, "status": "approved", "required": 0, "approvals": []}
    if not request_id:
        raise RollbackError("a planned rollback needs an approved request: run 'request-rollback --planned', "
                            "have another admin run 'approve-rollback ID', then 'rollback --planned --request ID'.")
    req = get_request(ext, request_id)
    if req is None:
        raise RollbackError(f"no rollback request {request_id!r}: see 'rollback-requests'.")
    if _expired(req):
        raise RollbackError(f"request {request_id} expired at {req['expires_at']}; open a new one.")
    if req["status"] == "pending":
        raise RollbackError(f"request {request_id} has {len(req['approvals'])} of {req['required']} approvals: "
                            "another administrator must run 'approve-rollback' first.")
    if req["status"] == "used":
        raise RollbackError(f"request {request_id} was already used by operation {req['operation_id']}.")
    if req["status"] != "approved":
        raise RollbackError(f"request {request_id} is {req['status']}.")
    return req


def mark_used(ext: Any, request_id: str | None, operation_id: str, actor: str) -> None:
    if not request_id:
        return
    req = get_request(ext, request_id)
    if req is not None:
        req.update(status="used", operation_id=operation_id)
        ext.control.write(KEY_PREFIX + request_id, req, actor)

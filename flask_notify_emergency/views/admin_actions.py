"""The dashboard's actions, shared by its HTML forms and its JSON API.

Each action validates its input first (:class:`ActionError` naming what to fix, nothing
changed), then acts through the services, and writes what it did to the audit log with
the admin's name and the request's source.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..access import actor_name
from ..audit import request_source
from ..automation import recovery
from ..config import BANNER_LEVELS, BANNER_YEARS
from ..delivery import BANNER_EVENT
from ..learn import run_health
from ..respond import emergency
from ..rollback import execute as rollback_execute
from ..rollback import verify_rollback_ready

ROLLBACK_WORD = "ROLLBACK"
RESTORE_WORD = "RESTORE"
REASON_MAX = 1000


class ActionError(ValueError):
    """An action was refused (bad input, or the system said no); nothing was changed."""

    status = 400

    def __init__(self, message: str, audited: bool = False) -> None:
        super().__init__(message)
        #: True when the service already wrote the refusal to the audit log
        self.audited = audited


@dataclass
class ActionResult:
    """What an action did: a sentence for the admin, and the data behind it."""

    message: str
    data: dict[str, Any] = field(default_factory=dict)
    category: str = "success"


Form = Mapping[str, Any]


def _text(form: Form, name: str) -> str:
    value = form.get(name)
    if value is None or isinstance(value, bool):
        return ""
    return value.strip() if isinstance(value, str) else str(value)  # JSON numbers too


def _flag(form: Form, name: str) -> bool:
    value = form.get(name)
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in ("1", "true", "on", "yes")


def _reason(form: Form, what: str) -> str:
    reason = _text(form, "reason")
    if not reason:
        raise ActionError(f"a reason is required to {what}: say what happened and why.")
    if len(reason) > REASON_MAX:
        raise ActionError(f"the reason is {len(reason)} characters; keep it under {REASON_MAX}.")
    return reason


def _audit(ext: Any, action: str, arguments: dict[str, Any], outcome: str = "ok",
           detail: str | None = None, event_id: int | None = None) -> None:
    ext.audit.record(actor_name(), action, request_source(), arguments, outcome=outcome,
                     detail=detail, event_id=event_id)


def perform(ext: Any, name: str, action: Callable[..., ActionResult], *args: Any) -> ActionResult:
    """Run an action; a refusal is written to the audit log too, then re-raised."""
    try:
        return action(ext, *args)
    except ActionError as exc:
        if not exc.audited:
            first = args[0] if args else None
            arguments = ({k: first.get(k) for k in first if k != "csrf_token"} if isinstance(first, Mapping)
                         else {"args": list(args)})
            _audit(ext, name, request_excerpt(arguments), outcome="refused",
                   detail=_cut(str(exc), EXCERPT_DETAIL_MAX))
        raise


#: A refused action keeps this much of its request in the audit log (which every admin's
#: live overview shows): at most this many fields, each value cut to this many characters.
EXCERPT_FIELDS = 20
EXCERPT_VALUE_MAX = 200
EXCERPT_DETAIL_MAX = 500


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}\u2026 ({len(text)} characters)"


def request_excerpt(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A bounded copy of a refused request: the first fields, long values and names cut,
    nested values shown as cut text."""
    excerpt: dict[str, Any] = {}
    for key in list(arguments)[:EXCERPT_FIELDS]:
        value = arguments[key]
        plain_number = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and len(repr(value)) <= 20 and math.isfinite(value)
        if not (value is None or isinstance(value, bool) or plain_number):
            value = _cut(value if isinstance(value, str) else repr(value), EXCERPT_VALUE_MAX)
        excerpt[_cut(str(key), 64)] = value
    if len(arguments) > EXCERPT_FIELDS:
        excerpt["(more fields)"] = len(arguments) - EXCERPT_FIELDS
    return excerpt


# -- emergency mode ----------------------------------------------------------------------
def activate(ext: Any, form: Form) -> ActionResult:
    """Switch to emergency mode and open an event (reason required, level 1-4)."""
    reason = _reason(form, "activate emergency mode")
    try:
        level = emergency.parse_level(_text(form, "level") or 1)
    except ValueError as exc:
        raise ActionError(str(exc)) from None
    try:
        event = emergency.activate(ext, reason=reason, triggered_by=actor_name(), level=level,
                                   source=request_source(), actor=actor_name())
    except emergency.EmergencyError as exc:
        raise ActionError(str(exc)) from None
    if event.get("already_active"):
        return ActionResult(f"Emergency mode was already on (event #{event['id']}); nothing changed.",
                            {"event": event}, "info")
    return ActionResult(f"Emergency mode is on: event #{event['id']}, level {event['level']} "
                        f"({event['level_name']}).", {"event": event})


def deactivate(ext: Any, form: Form) -> ActionResult:
    """Leave emergency mode (reason required; ``force`` overrides failing health checks)."""
    reason = _reason(form, "leave emergency mode")
    force = _flag(form, "force")
    try:
        result = emergency.deactivate(ext, resolved_by=actor_name(), force=force, reason=reason,
                                      source=request_source(), recovered=not _flag(form, "not_recovered"))
    except emergency.EmergencyError as exc:
        text = str(exc).replace('--force --reason "..."', "'force' with a reason").replace("--force", "'force'")
        raise ActionError(text, audited="refusing" in text) from None
    event = result.get("event")
    which = f" (event #{event['id']} resolved)" if event else ""
    return ActionResult(f"Emergency mode is off{which}; the delivery mode is '{result['mode']}'.", result)


def set_fallback(ext: Any, form: Form) -> ActionResult:
    """Pause (``enabled``) or resume real-time delivery; notifications then go to flash and polling."""
    raw = form.get("enabled")
    if raw is None or str(raw).strip() == "":
        raise ActionError("say whether to enable the fallback: enabled=1 (pause real-time delivery) "
                          "or enabled=0 (resume it).")
    enabled = _flag(form, "enabled")
    ext.control.set_paused("realtime", enabled, actor_name())
    _audit(ext, "enable-fallback" if enabled else "disable-fallback", {"realtime_paused": enabled})
    if enabled:
        return ActionResult("Fallback on: real-time delivery is paused; notifications go to flash "
                            "messages and polling.", {"paused": ext.control.paused()})
    return ActionResult("Real-time delivery resumed.", {"paused": ext.control.paused()})


# -- banners -----------------------------------------------------------------------------
def parse_time(value: Any, name: str) -> dt.datetime | None:
    """``YYYY-MM-DDTHH:MM[:SS]`` (UTC; a trailing Z is allowed) or empty; ActionError otherwise."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return None
    shown = _cut(text, 40)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except ValueError:
        raise ActionError(f"{name} must be a date and time like 2030-01-31T18:00 (UTC); got {shown!r}.") from None
    except OverflowError:  # a time zone pushed it past year 1 or 9999
        parsed = dt.datetime.min
    if not BANNER_YEARS[0] <= parsed.year <= BANNER_YEARS[1]:
        raise ActionError(f"{name} must be between the years {BANNER_YEARS[0]} and {BANNER_YEARS[1]}; "
                          f"got {shown!r}.")
    return parsed


def post_banner(ext: Any, form: Form) -> ActionResult:
    """Post a site-wide banner (level, title, message, optional start and end)."""
    level = _text(form, "level") or "warning"
    message = _text(form, "message")
    title = _text(form, "title") or None
    args = {"level": level, "title": title, "message": message,
            "starts_at": form.get("starts_at"), "ends_at": form.get("ends_at")}
    if level not in BANNER_LEVELS:
        raise ActionError(f"level must be one of {', '.join(BANNER_LEVELS)}; got {level!r}.")
    if not message:
        raise ActionError("a banner needs a message: say what users should know.")
    starts_at = parse_time(form.get("starts_at"), "starts_at")
    ends_at = parse_time(form.get("ends_at"), "ends_at")
    try:
        # the public API: stored, every worker told, pages updated live where sockets work
        bid = ext.broadcast(message, level=level, title=title, starts_at=starts_at, ends_at=ends_at,
                            created_by=actor_name())
    except ValueError as exc:
        raise ActionError(str(exc)) from None
    _audit(ext, "post-banner", dict(args, banner_id=bid))
    when = f", shown from {starts_at:%Y-%m-%d %H:%M} UTC" if starts_at else ""
    return ActionResult(f"Banner #{bid} posted ({level}{when}).", {"banner_id": bid})


def dismiss_banner(ext: Any, banner_id: int) -> ActionResult:
    """Take a banner down on every page."""
    count = ext.store.dismiss_banner(banner_id, actor_name())
    if not count:
        raise ActionError(f"banner #{banner_id} does not exist or was already dismissed.")
    ext.banners_changed(actor_name())
    _audit(ext, "dismiss-banner", {"banner_id": banner_id})
    _tell_pages_banners_changed(ext, banner_id)
    return ActionResult(f"Banner #{banner_id} dismissed.", {"banner_id": banner_id})


def _tell_pages_banners_changed(ext: Any, banner_id: int) -> None:
    if ext.socketio is None:
        return
    try:  # best effort: pages poll their banners anyway
        ext.socketio.emit(BANNER_EVENT, {"dismissed": banner_id}, namespace=ext.namespace)
    except Exception as exc:
        ext.app.logger.warning("flask-notify-emergency: live banner update failed: %s", exc)


# -- health, recovery --------------------------------------------------------------------
def run_health_check(ext: Any, form: Form) -> ActionResult:
    """Run every health check now."""
    report = run_health(ext)
    failing = sorted(n for n, c in (report.get("checks") or {}).items() if not c.get("ok"))
    _audit(ext, "health-check", {}, detail=f"status {report.get('status')}, score {report.get('score')}")
    text = f"Health check: {report.get('status')}, score {report.get('score')}."
    if failing:
        text += f" Failing: {', '.join(failing)}."
    return ActionResult(text, {"report": report}, "success" if not failing else "warning")


def auto_recover(ext: Any, form: Form) -> ActionResult:
    """Run the automatic recovery plan."""
    result = recovery.auto_recover(ext, actor_name(), request_source())  # the recovery plan writes the audit entry
    return ActionResult(f"Automatic recovery: {_summary(result)}.", {"result": result},
                        "success" if _outcome(result) in GOOD_OUTCOMES else "warning")


def _outcome(result: Any) -> str:
    if isinstance(result, dict):
        ok = result.get("ok", result.get("recovered", result.get("success")))
        if ok is not None:
            return "ok" if ok else "failed"
        status = result.get("status") or result.get("outcome")
        if isinstance(status, str):
            return status[:16]
    return "ok"


def _summary(result: Any) -> str:
    if isinstance(result, dict):
        for key in ("message", "summary", "detail", "status", "outcome"):
            if isinstance(result.get(key), str) and result[key]:
                text = str(result[key])[:300]
                if result.get("operation_id"):
                    text += f" (operation {result['operation_id']})"
                return text
    return _outcome(result)


#: Outcomes of a service call that are not a failure.
GOOD_OUTCOMES = ("ok", "done", "completed", "dry-run", "already-done", "nothing-to-restore", "recovered")


# -- rollback ----------------------------------------------------------------------------
def _confirm_word(form: Form, word: str, what: str) -> None:
    typed = _text(form, "confirm")
    if typed != word:
        raise ActionError(f"type the word {word} (in capitals) in the confirmation box to {what}; "
                          f"got {typed!r}.")


def _rollback_call(ext: Any, name: str, what: str, **kwargs: Any) -> dict[str, Any]:
    func: Callable[..., dict[str, Any]] = getattr(rollback_execute, name)
    try:
        return func(ext, **kwargs)
    except rollback_execute.RollbackError as exc:  # the rollback wrote the refusal to the audit log
        raise ActionError(str(exc).replace("--confirm", "the typed confirmation")
                          .replace('--force --reason "..."', "'force' with a reason"), audited=True) from None


def rollback(ext: Any, form: Form) -> ActionResult:
    """Roll back to flash-only (legacy) delivery; the admin types ROLLBACK to confirm."""
    reason = _reason(form, "roll back")
    _confirm_word(form, ROLLBACK_WORD, "roll back")
    dry_run = _flag(form, "dry_run")
    result = _rollback_call(ext, "rollback", "rollback", reason=reason, actor=actor_name(),
                            source=request_source(), confirm=True, dry_run=dry_run)
    what = "Rollback rehearsal (dry run)" if dry_run else "Rollback"
    return ActionResult(f"{what}: {_summary(result)}.", {"result": result},
                        "success" if _outcome(result) in GOOD_OUTCOMES else "warning")


def restore(ext: Any, form: Form) -> ActionResult:
    """Undo a rollback; the admin types RESTORE to confirm."""
    _confirm_word(form, RESTORE_WORD, "restore real-time delivery")
    reason = _text(form, "reason") or None
    extra = {"force": True} if _flag(form, "force") else {}
    if extra and not reason:
        raise ActionError("'force' needs a reason: say why it is safe to restore real-time delivery.")
    result = _rollback_call(ext, "restore", "restore", actor=actor_name(), source=request_source(),
                            confirm=True, reason=reason, **extra)
    return ActionResult(f"Restore: {_summary(result)}.", {"result": result},
                        "success" if _outcome(result) in GOOD_OUTCOMES else "warning")


def rollback_status(ext: Any) -> dict[str, Any]:
    """The rollback's live status and the pre-rollback checklist, or why they are not available."""
    try:
        result = dict(rollback_execute.rollback_status(ext), available=True)
    except Exception as exc:  # show the failure on the page
        return {"available": True, "error": f"{type(exc).__name__}: {exc}"[:300]}
    try:
        ready = verify_rollback_ready(ext)
        result["checklist"], result["ready"] = ready["checks"], ready["ok"]
    except Exception as exc:
        result["checklist"] = [{"name": "checklist", "ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}]
    return result

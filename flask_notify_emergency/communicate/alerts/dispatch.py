"""Sending alerts: the escalation matrix, the alert texts, and the signal receivers.

Escalation matrix (the runbook's "Escalation Matrix", by the event's level):

=====  ==========  ==========================================
level  name        channels
=====  ==========  ==========================================
1      critical    in-app to every admin, email, SMS, webhooks, Apprise
2      high        in-app to every admin, email, SMS, Apprise
3      medium      email
4      low         in-app to every admin
=====  ==========  ==========================================

An emergency being **detected** (``signals.emergency_detected``) alerts per its level; its
**resolution** (``signals.emergency_resolved``) sends "resolved" to the same channels; a
failed recovery plan sends **escalated** with the matrix of the next more severe level.
Repeats within ``ALERT_COOLDOWN`` are suppressed (:mod:`.ledger`). Every send is audited.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any, Iterable

from ... import signals
from ...detect import LEVELS, parse_level
from ...respond import get_event
from . import ledger
from .channels import CHANNELS, Alert, send_mail
from .targets import effective_targets

log = logging.getLogger("flask_notify_emergency")

ESCALATION: dict[int, tuple[str, ...]] = {
    1: ("in_app", "email", "sms", "webhook", "apprise"),
    2: ("in_app", "email", "sms", "apprise"),
    3: ("email",),
    4: ("in_app",),
}
#: Severity words besides the level names, for test and notice alerts.
SEVERITY_ALIASES = {"info": 4, "warning": 3, "error": 2}


def severity_level(severity: Any) -> int:
    """1-4, a level name, or info/warning/error; ValueError naming the choices otherwise."""
    if isinstance(severity, str) and severity.strip().lower() in SEVERITY_ALIASES:
        return SEVERITY_ALIASES[severity.strip().lower()]
    try:
        return parse_level(severity)
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}: use 1-4, critical/high/medium/low, "
                         f"or {'/'.join(SEVERITY_ALIASES)}.") from None


def _channel_names(channels: Iterable[str] | None, level: int) -> tuple[list[str], bool]:
    if channels is None:
        return list(ESCALATION[level]), False
    names = [str(c).strip().lower().replace("-", "_") for c in channels]
    unknown = [n for n in names if n not in CHANNELS]
    if unknown:
        raise ValueError(f"unknown alert channel(s) {', '.join(unknown)}: use {', '.join(CHANNELS)}.")
    return list(dict.fromkeys(names)), True


def send_alert(ext: Any, subject: str, body: str, severity: Any, event_id: int | None = None,
               channels: Iterable[str] | None = None, *, kind: str = "manual",
               event: dict[str, Any] | None = None, actor: str = "alerts",
               source: str = "alerts") -> list[dict[str, Any]]:
    """Send one alert now (no cooldown); one result per target: channel, target, ok, error.

    ``channels`` None follows the escalation matrix of ``severity``; a channel named
    explicitly but without targets gets a result row saying what to configure.
    """
    level = severity_level(severity)
    names, explicit = _channel_names(channels, level)
    timeout = float(ext.app.config["NOTIFY_EMERGENCY_ALERT_TIMEOUT"])
    alert = Alert(subject, body, level, kind, event_id, event)
    rows: list[dict[str, Any]] = []
    jobs: list[tuple[str, str]] = []
    for name in names:
        channel = CHANNELS[name]
        try:
            targets = channel.targets(ext)
        except Exception as exc:  # e.g. the admin query needs the database
            rows.append({"channel": name, "target": None, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        missing = getattr(channel, "missing", lambda _ext: None)(ext) if targets else None
        if not targets or missing:
            if explicit or missing:
                rows.append({"channel": name, "target": None, "ok": False,
                             "error": missing or f"no targets: set {channel.config_key}"})
            continue
        jobs += [(name, t) for t in targets]
    # in-app is a local insert: done here, so it can never land after we stopped waiting
    for name, target in [j for j in jobs if j[0] == "in_app"]:
        try:
            CHANNELS[name].send(ext, target, alert, timeout)
            rows.append({"channel": name, "target": _label(name, target), "ok": True, "error": None})
        except Exception as exc:
            rows.append({"channel": name, "target": _label(name, target), "ok": False,
                         "error": f"{type(exc).__name__}: {exc}"})
    jobs = [j for j in jobs if j[0] != "in_app"]
    if jobs:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(jobs)),
                                                   thread_name_prefix="notify-alert") as pool:
            futures = [(n, t, pool.submit(CHANNELS[n].send, ext, t, alert, timeout)) for n, t in jobs]
            for name, target, future in futures:
                try:
                    future.result(timeout=timeout + 1)
                    rows.append({"channel": name, "target": _label(name, target), "ok": True, "error": None})
                except Exception as exc:
                    error = "no answer in time" if isinstance(exc, concurrent.futures.TimeoutError) else \
                        f"{type(exc).__name__}: {exc}"
                    rows.append({"channel": name, "target": _label(name, target), "ok": False, "error": error})
    _audit(ext, actor, source, kind, level, subject, rows, event_id)
    return rows


def _label(channel: str, target: str) -> str:
    """A target as results and the audit log show it (an Apprise URL's tokens masked)."""
    label = getattr(CHANNELS[channel], "label", None)
    return label(target) if label is not None else target


def send_email(ext: Any, recipients: Iterable[str], subject: str, body: str) -> list[dict[str, Any]]:
    """Mail ``subject``/``body`` to each recipient through the alert SMTP settings."""
    timeout = float(ext.app.config["NOTIFY_EMERGENCY_ALERT_TIMEOUT"])
    rows = []
    for to in recipients:
        try:
            send_mail(ext, to, subject, body, timeout)
            rows.append({"channel": "email", "target": to, "ok": True, "error": None})
        except Exception as exc:
            rows.append({"channel": "email", "target": to, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def _audit(ext: Any, actor: str, source: str, kind: str, level: int, subject: str,
           rows: list[dict[str, Any]], event_id: int | None) -> None:
    failed = [r for r in rows if not r["ok"]]
    outcome = "ok" if rows and not failed else ("failed" if len(failed) == len(rows) else "partial")
    try:
        ext.audit.record(actor, "send-alert", source, {"kind": kind, "level": level, "subject": subject[:200]},
                         outcome=outcome, event_id=event_id,
                         detail="; ".join(f"{r['channel']} {r['target']}: {'ok' if r['ok'] else r['error']}"
                                          for r in rows)[:2000] or "no targets")
    except Exception as exc:  # alerts matter most when the database is down
        log.warning("flask-notify-emergency: could not audit an alert: %s", exc)


# -- event alerts ------------------------------------------------------------------------
def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) as one space: a subject line."""
    return " ".join(str(text).split())


def compose(event: dict[str, Any], kind: str, level: int, note: str | None = None) -> tuple[str, str]:
    """Subject and body of an event alert."""
    lv = LEVELS[level]
    head = {"detected": "EMERGENCY", "escalated": "ESCALATED", "resolved": "RESOLVED"}.get(kind, kind.upper())
    subject = one_line(f"[{head}] Level {level} ({lv.name}): {event['failure_type']} - {event['reason']}")[:200]
    lines = [f"Emergency event #{event['id']}: {kind}.",
             f"Level: {event['level']} ({LEVELS[event['level']].name if event['level'] in LEVELS else '?'})"
             + (f", alerting as level {level}" if level != event["level"] else ""),
             f"Failure type: {event['failure_type']}", f"Reason: {event['reason']}",
             f"Triggered by: {event.get('triggered_by')}", f"Detected at: {event.get('detected_at')}",
             f"Affected users: {event.get('affected_users')}"]
    if kind == "resolved":
        lines += [f"Resolved at: {event.get('resolved_at')} by {event.get('resolved_by')}",
                  f"Recovered: {event.get('recovered')}"]
    else:
        lines.append(f"Respond within {int(lv.respond_within.total_seconds() // 60)} minutes; escalation: {lv.escalation}.")
    if note:
        lines.append(note)
    return subject, "\n".join(lines)


def alert_event(ext: Any, event: dict[str, Any], kind: str, level: int | None = None,
                note: str | None = None) -> list[dict[str, Any]]:
    """Alert about an event (detected / escalated / resolved), once per cooldown; [] if suppressed."""
    level = int(level or event["level"])
    keys = [f"event:{event['id']}:{kind}"]
    if kind == "detected":
        keys.append(f"type:{event['failure_type']}:detected")

    def still_open(other_id: int) -> bool:
        try:
            other = get_event(ext, other_id)
        except Exception:
            return True
        return bool(other and other["status"] == "open")

    send, why = ledger.claim(ext, keys, event["id"], still_open)
    if not send:
        log.info("flask-notify-emergency: %s alert for event #%s suppressed: %s", kind, event["id"], why)
        return []
    subject, body = compose(event, kind, level, note)
    return send_alert(ext, subject, body, level, event["id"], kind=kind, event=event,
                      actor="monitor" if event.get("triggered_by") == "monitor" else "alerts")


def alert_unrecorded(ext: Any, classification: Any, error: str) -> list[dict[str, Any]]:
    """Alert about a failure that could not be recorded as an event (the database is down)."""
    c = classification
    send, _ = ledger.claim(ext, [f"unrecorded:{c.failure_type}"], None, lambda _id: True)
    if not send:
        return []
    subject = f"[EMERGENCY] Level {c.level} ({c.level_name}): {c.failure_type} - not recorded"[:200]
    body = (f"{c.reason}\nThe emergency could not be recorded because the database is unreachable "
            f"({error}). Nothing was written; the monitor keeps checking.")
    return send_alert(ext, subject, body, c.level, None, kind="detected")


def init_app(app: Any, ext: Any) -> None:
    """Alert on every emergency detected and resolved for ``app``."""
    def on_detected(sender: Any, event: dict[str, Any], **_: Any) -> None:
        try:
            alert_event(ext, event, "detected")
        except Exception:  # an alert failure must never undo or block the activation
            log.exception("flask-notify-emergency: emergency alert failed")

    def on_resolved(sender: Any, event: dict[str, Any], **_: Any) -> None:
        try:
            alert_event(ext, event, "resolved")
        except Exception:
            log.exception("flask-notify-emergency: resolution alert failed")

    ext.receivers += [on_detected, on_resolved]
    signals.emergency_detected.connect(on_detected, sender=app, weak=False)
    signals.emergency_resolved.connect(on_resolved, sender=app, weak=False)


def test_alerts(ext: Any, *, actor: str, source: str = "cli") -> dict[str, Any]:
    """Send one test alert through every channel that has a target (email, SMS, webhooks,
    Apprise, in-app to the admins); each target's result. LookupError when there is none."""
    targets = effective_targets(ext)
    # every channel that has somewhere to send to, in-app (the admins) included
    channels = [name for name, channel in CHANNELS.items()
                if (targets[name] if name in targets else channel.targets(ext))]
    if not channels:
        raise LookupError("no alert targets are configured: add some with configure-alerts "
                          "(or NOTIFY_EMERGENCY_ALERT_EMAILS / _SMS_NUMBERS / _WEBHOOKS / _APPRISE_URLS).")
    results = send_alert(ext, "Test alert from flask-notify-emergency",
                         f"This is a test of the emergency alert channels, sent by {actor}. "
                         "No action is needed.", "info", channels=channels, kind="test",
                         actor=actor, source=source)
    results = [dict(r) for r in results or []]
    ok = bool(results) and all(r.get("ok") for r in results)
    ext.audit.record(actor, "test-alerts", source, {"channels": channels}, outcome="ok" if ok else "failed",
                     detail="; ".join(f"{r.get('channel')} {r.get('target')}: "
                                      f"{'ok' if r.get('ok') else r.get('error')}" for r in results)[:2000])
    return {"ok": ok, "targets": targets, "results": results}

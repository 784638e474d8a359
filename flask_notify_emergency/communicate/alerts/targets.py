"""Who receives emergency alerts: the configured targets plus those set at run time.

``NOTIFY_EMERGENCY_ALERT_EMAILS`` / ``_ALERT_SMS_NUMBERS`` / ``_ALERT_WEBHOOKS`` /
``_ALERT_APPRISE_URLS`` are the deploy-time targets. ``configure-alerts`` stores more in the control table (key
``alert_targets``), so an operator can add a phone number during an emergency without a
redeploy; every worker reads the same row. Alerts go to both, without duplicates.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, Iterable

from ...config import apprise_problem, redact_apprise_url

KEY = "alert_targets"
CHANNELS = ("email", "sms", "webhook", "apprise")
CONFIG_KEYS = {"email": "NOTIFY_EMERGENCY_ALERT_EMAILS", "sms": "NOTIFY_EMERGENCY_ALERT_SMS_NUMBERS",
               "webhook": "NOTIFY_EMERGENCY_ALERT_WEBHOOKS", "apprise": "NOTIFY_EMERGENCY_ALERT_APPRISE_URLS"}
MAX_PER_CHANNEL = 50

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
#: E.164: '+', a country code not starting with 0, at most 15 digits in all.
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def _split(values: Iterable[str] | str | None) -> list[str]:
    """Repeated options and comma-separated lists alike -> one list, blanks dropped."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in str(value).split(",") if part.strip())
    return list(dict.fromkeys(out))


def parse_emails(values: Iterable[str] | str | None, option: str = "--email") -> list[str]:
    """Email addresses, or ValueError naming the first malformed one."""
    emails = _split(values)
    for email in emails:
        if len(email) > 254 or not _EMAIL.match(email):
            raise ValueError(f"{option} {email!r} is not an email address: use the form name@example.com.")
    return _limit(emails, option)


def parse_phones(values: Iterable[str] | str | None, option: str = "--sms") -> list[str]:
    """E.164 phone numbers (``+15551234567``), or ValueError naming the first malformed one."""
    phones = [re.sub(r"[\s().-]", "", p) for p in _split(values)]
    for phone in phones:
        if not _E164.match(phone):
            raise ValueError(f"{option} {phone!r} is not an E.164 phone number: use '+', the country code "
                             "and the number, digits only, e.g. +15551234567.")
    return _limit(list(dict.fromkeys(phones)), option)


def parse_urls(values: Iterable[str] | str | None, option: str = "--webhook") -> list[str]:
    """http(s) URLs with a host, or ValueError naming the first unusable one."""
    urls = _split(values)
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            raise ValueError(f"{option} {url!r} is not an http(s) URL: use e.g. https://alerts.example.com/hook.")
    return _limit(urls, option)


def parse_apprise_urls(values: Iterable[str] | str | None, option: str = "--apprise") -> list[str]:
    """URLs Apprise can use (``slack://…``, ``pagerduty://…``, ``json://…``), or ValueError
    naming the first it cannot (or saying that the apprise package is missing).

    Not split at commas: Apprise URLs may carry commas in their query."""
    if values is None:
        return []
    urls = list(dict.fromkeys(v.strip() for v in ([values] if isinstance(values, str) else values) if v.strip()))
    for url in urls:
        problem = apprise_problem(url)
        if problem:
            raise ValueError(f"{option} {problem}" if problem.startswith("needs")
                             else f"{option} {redact_apprise_url(url)!r} {problem.split(' ', 1)[1]}")
    return _limit(urls, option)


def _limit(values: list[str], option: str) -> list[str]:
    if len(values) > MAX_PER_CHANNEL:
        raise ValueError(f"{option} lists {len(values)} targets; at most {MAX_PER_CHANNEL}.")
    return values


PARSERS = {"email": parse_emails, "sms": parse_phones, "webhook": parse_urls, "apprise": parse_apprise_urls}


def stored_targets(ext: Any) -> dict[str, list[str]]:
    """Targets set with ``configure-alerts`` (database), by channel."""
    value = ext.control.read(KEY) or {}
    return {channel: [str(v) for v in (value.get(channel) or [])] for channel in CHANNELS}


def configured_targets(ext: Any) -> dict[str, list[str]]:
    """Targets from the app's config, by channel."""
    cfg = ext.app.config
    return {channel: [str(v) for v in (cfg.get(key) or [])] for channel, key in CONFIG_KEYS.items()}


def effective_targets(ext: Any) -> dict[str, list[str]]:
    """Config targets then stored ones, without duplicates: where alerts go.

    If the database cannot be read (it may be what failed), the config targets still get
    the alert.
    """
    merged = configured_targets(ext)
    try:
        stored = stored_targets(ext)
    except Exception as exc:  # alerting must not depend on the database being up
        ext.app.logger.warning("flask-notify-emergency: stored alert targets unreadable, "
                               "using the config's only: %s", exc)
        return merged
    return {channel: list(dict.fromkeys(merged[channel] + stored[channel])) for channel in CHANNELS}


def configure(ext: Any, *, actor: str, source: str = "cli", email: Any = None, sms: Any = None,
              webhook: Any = None, apprise: Any = None, clear: bool = False) -> dict[str, Any]:
    """Replace the stored targets of each channel given (``clear``: drop all stored ones first).

    ValueError (nothing stored) if any value is malformed.
    """
    given = {"email": email, "sms": sms, "webhook": webhook, "apprise": apprise}
    parsed = {channel: PARSERS[channel](value) for channel, value in given.items() if value is not None}
    if not parsed and not clear:
        raise ValueError("nothing to configure: give --email, --sms, --webhook and/or --apprise (or --clear).")
    targets = {channel: [] for channel in CHANNELS} if clear else stored_targets(ext)
    targets.update(parsed)
    ext.control.write(KEY, targets, actor)
    ext.audit.record(actor, "configure-alerts", source,
                     {"email": parsed.get("email"), "sms": parsed.get("sms"),
                      "webhook": parsed.get("webhook"),
                      # the audit log is read by many: Apprise URLs carry tokens
                      "apprise": [redact_apprise_url(u) for u in parsed["apprise"]] if "apprise" in parsed else None,
                      "clear": clear})
    return {"ok": True, "stored": targets, "configured": configured_targets(ext),
            "effective": effective_targets(ext)}

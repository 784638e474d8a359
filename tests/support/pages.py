"""Reading what a user sees: flashes and banners in a page, the client settings, the rows."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import sqlalchemy as sa

NAMESPACE = "/notify-emergency"
POLL_URL = "/emergency/api/notifications/poll"
BANNERS_URL = "/emergency/api/banners"

_FLASH = re.compile(r'<div class="flash ([^"]*)" role="status">(.*?)</div>', re.S)
_BANNER = re.compile(r'<div class="notify-emergency-banner [^"]*"[^>]*data-banner-id="(\d+)">(.*?)</div>', re.S)
_MARKER = re.compile("\u2063([\u200b\u200c]+)\u2063")
_SETTINGS = re.compile(r'<script type="application/json" id="notify-emergency-settings">(.*?)</script>', re.S)


def flashes(page: str) -> list[str]:
    """The flashed messages of an example-app page, as the user reads them (unescaped, without
    the invisible id marker of a notification)."""
    return [visible(html.unescape(m.group(2).strip())) for m in _FLASH.finditer(page)]


def visible(text: str) -> str:
    """``text`` without the invisible characters that carry a flashed notification's id."""
    return _MARKER.sub("", text)


def flash_ids(page: str) -> list[int]:
    """The notification ids of the flashes in an example-app page (flashes of the host have none)."""
    return [int(i.group(1).replace("\u200b", "0").replace("\u200c", "1"), 2)
            for m in _FLASH.finditer(page) for i in _MARKER.finditer(m.group(2))]


def banner_ids(page: str) -> list[int]:
    """Ids of the site-wide banners rendered in a page."""
    return [int(m.group(1)) for m in _BANNER.finditer(page)]


def client_settings(page: str) -> dict[str, Any]:
    """The client script's settings JSON embedded in a page."""
    match = _SETTINGS.search(page)
    assert match, "the page has no notify-emergency settings script"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def csrf_from_page(client: Any, path: str = "/") -> str:
    """The CSRF token the client script would send, read from a page's settings."""
    page = client.get(path).get_data(as_text=True)
    token = client_settings(page)["csrfToken"]
    assert token, "a logged-in page carries a CSRF token"
    return str(token)


def poll(client: Any, token: str) -> Any:
    """One poll of the client API, as the script does it."""
    return client.post(POLL_URL, json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"})


def notification_rows(app: Any, **where: Any) -> list[dict[str, Any]]:
    """Every stored notification row (optionally filtered by column values), oldest first."""
    ext = app.extensions["notify_emergency"]
    t = ext.models.Notification.__table__
    q = sa.select(t).order_by(t.c.id)
    for column, value in where.items():
        q = q.where(t.c[column] == value)
    with ext.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def banner_rows(app: Any) -> list[dict[str, Any]]:
    """Every stored banner row."""
    ext = app.extensions["notify_emergency"]
    t = ext.models.Banner.__table__
    with ext.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def received(sio_client: Any, event: str) -> list[Any]:
    """Payloads of ``event`` a Flask-SocketIO test client got since the last call."""
    return [p["args"][0] for p in sio_client.get_received(NAMESPACE) if p["name"] == event]

"""The send path: a notification is validated, stored first, then routed to the user's
Socket.IO room (delivered when the browser acknowledges it) or to the fallbacks (flash on the
next page, the polling endpoint, banners). Holds the dispatcher, the store, the circuit
breaker, the notifiers, the fallback receivers, delivery statistics, the hourly totals the
store keeps for the dashboard (:mod:`.hourly`), the user Socket.IO namespace
(:mod:`.realtime`), how often the client script polls (:mod:`.polling`), the page helpers that put banners and the client script into the host's
pages, and the words users read there, in their language (:mod:`.i18n`).

Uses only the shared top-level modules (config, models, signals, access, state, control,
audit, assets).
"""

from __future__ import annotations

from . import fallbacks, hourly, i18n, polling, realtime, stats
from .breaker import BREAKER_STATES, CLOSED, HALF_OPEN, CircuitBreaker
from .dispatcher import Dispatcher
from .fallbacks import claim_for_user, flash_pending
from .notifier import ACK_EVENT, BANNER_EVENT, EVENT, CallableNotifier, SocketIONotifier
from .page_helpers import PageHelpers, render_banners, render_scripts
from .realtime import CANARY_EVENT
from .store import NotificationStore, banner_payload, steady_engine

__all__ = [
    "ACK_EVENT", "BANNER_EVENT", "banner_payload", "BREAKER_STATES", "CallableNotifier", "CANARY_EVENT",
    "i18n",
    "CircuitBreaker", "claim_for_user", "CLOSED", "Dispatcher", "EVENT", "fallbacks", "flash_pending", "HALF_OPEN", "hourly",
    "NotificationStore", "PageHelpers", "polling", "realtime", "render_banners", "render_scripts",
    "SocketIONotifier", "stats", "steady_engine",
]

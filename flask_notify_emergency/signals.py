"""Blinker signals. The sender is always the real Flask app.

Fallbacks are receivers of these signals: connect your own (Slack, SMS, ...) the same way
the built-in ones are connected::

    from flask_notify_emergency import signals

    @signals.notification_fallback.connect_via(app)
    def to_slack(app, notification, reason, **extra):
        ...
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent when a notification has been stored, before any delivery is tried.
#: kwargs: ``notification`` (dict: id, user_id, title, message, priority, category, data).
notification_sent = _signals.signal("notification-sent")

#: Sent when a notification was handed to the real-time notifier (emitted to the user's
#: socket); whether it arrives is told by ``notification_delivered`` or ``notification_fallback``.
#: kwargs: ``notification`` (dict).
notification_emitted = _signals.signal("notification-emitted")

#: Sent when the browser confirmed it showed notifications: acknowledged over the socket, or a
#: flash or poll offer confirmed (the ack outbox cookie, the ack endpoint). Once per channel
#: counted. kwargs: ``notification_ids`` (list of int), ``user_id`` (str), ``channel`` (str:
#: ``realtime``, ``flash``, ``poll``), ``seconds`` (list of float, one per id: its creation to
#: delivery).
notification_delivered = _signals.signal("notification-delivered")

#: Sent when the real-time path failed for a notification (error, timeout or no ack).
#: kwargs: ``notification`` (dict), ``error`` (str), ``exception`` (BaseException or None).
notification_failed = _signals.signal("notification-failed")

#: Sent when a notification is handed to the fallbacks (flash, polling, your receivers).
#: kwargs: ``notification`` (dict: id, user_id, title, message, priority, category, ...),
#: ``reason`` (str), one of:
#: 'offline' (the user has no socket), 'failed' (the real-time send raised),
#: 'breaker-open', 'mode-emergency', 'mode-legacy', 'paused' (real-time delivery paused),
#: 'ack-timeout' (sent but never acknowledged), 'no-primary' (no real-time notifier),
#: 'queue-cleared' (released by ``clear-queues``), 'requested' (``send-user-notification``
#: through the fallback channel), 'test' (``test-fallback``).
notification_fallback = _signals.signal("notification-fallback")

#: Sent when a site-wide banner was posted. kwargs: ``banner`` (dict).
banner_posted = _signals.signal("banner-posted")

#: Sent when the delivery mode changed. kwargs: ``old`` (str), ``new`` (str), ``actor`` (str).
mode_changed = _signals.signal("mode-changed")

#: Sent when the circuit breaker changed state. kwargs: ``old`` (str), ``new`` (str).
breaker_changed = _signals.signal("breaker-changed")

#: Sent when an emergency event was opened. kwargs: ``event`` (dict).
emergency_detected = _signals.signal("emergency-detected")

#: Sent when an emergency event was resolved. kwargs: ``event`` (dict).
emergency_resolved = _signals.signal("emergency-resolved")

__all__ = [
    "banner_posted",
    "breaker_changed",
    "emergency_detected",
    "emergency_resolved",
    "mode_changed",
    "notification_delivered",
    "notification_failed",
    "notification_fallback",
    "notification_sent",
]

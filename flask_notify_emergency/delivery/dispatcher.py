"""The path of one notification: validate, persist, route, record.

1. :meth:`Dispatcher.send` validates (``ValueError`` naming what to fix) and stores the row.
2. In ``normal`` mode, with real-time delivery not paused, the user connected and the
   breaker allowing, the primary notifier delivers and an acknowledgement is awaited.
3. Otherwise, or on error or when no acknowledgement comes in time, the
   ``notification_fallback`` signal fires; the built-in receiver marks the user as having
   pending rows, which the next page request or poll claims exactly once.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import logging
import math
import threading
import time
import urllib.parse
from collections import OrderedDict
from typing import Any, Callable

import sqlalchemy as sa

from .. import signals
from ..config import BANNER_LEVELS, BANNER_YEARS, PRIORITIES
from ..models import utcnow
from .batching import GroupCommit
from .breaker import CircuitBreaker
from .store import Acked, NotificationStore

log = logging.getLogger("flask_notify_emergency")

#: The longest banner title (its column's size).
BANNER_TITLE_LENGTH = 200
#: The longest ``expires_in`` (100 years): beyond it the expiry time overflows a datetime.
MAX_EXPIRY_SECONDS = 100 * 365 * 86400
#: Seconds the acknowledgement watcher lets deadlines gather before it looks at them together.
WATCH_BATCH_SECONDS = 0.25


def check_action_url(action_url: Any) -> None:
    """Refuse (``ValueError``) anything but a same-origin path or an absolute http(s) URL.

    Browsers read ``//host`` and ``/\\host`` as another site, and ``javascript:`` runs code.
    """
    problem = "action_url must be a path on this site ('/...') or an http(s) URL of at most 500 characters"
    if not isinstance(action_url, str) or not action_url or len(action_url) > 500:
        raise ValueError(f"{problem}; got {action_url!r:.80}.")
    if "\\" in action_url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in action_url):
        raise ValueError(f"{problem}, without backslashes, spaces or control characters; got {action_url!r:.80}.")
    if action_url.startswith("/"):
        if action_url.startswith("//"):
            raise ValueError(f"{problem}: '//host' is another site; got {action_url!r:.80}.")
        return
    parts = urllib.parse.urlsplit(action_url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{problem}; got {action_url!r:.80}.")


def check_no_nul(**fields: Any) -> None:
    """Refuse (``ValueError``) a text holding a NUL character: PostgreSQL cannot store one, and
    the others would store what PostgreSQL refuses."""
    for name, value in fields.items():
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(f"{name} must not contain NUL characters ('\\x00'): PostgreSQL cannot store them.")


def refused_by_the_database(exc: BaseException) -> bool:
    """Did the database (or its driver) refuse a statement for what it held, the connection
    still good? Not: a failed connect, a broken connection, a commit's failure."""
    if isinstance(exc, (ValueError, TypeError)):  # a value the driver could not send
        return True
    return (isinstance(exc, sa.exc.DBAPIError) and exc.statement is not None
            and not exc.connection_invalidated)


def naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    """An aware datetime as naive UTC (how times are stored); a naive one as it is."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)


class Dispatcher:
    """Sends notifications for one app; owns the acknowledgement watcher."""

    def __init__(self, app: Any, store: NotificationStore, state: Any, breaker: CircuitBreaker,
                 notifier: Any, canonical_id: Callable[[str], str | None] | None) -> None:
        self.app = app
        self.store = store
        self.state = state
        self.breaker = breaker
        self.notifier = notifier
        #: a user id as given -> the id of the user it names, in the form sessions carry; None: no such user
        self.canonical_id = canonical_id
        cfg = app.config
        self.title_max = cfg["NOTIFY_EMERGENCY_TITLE_MAX_LENGTH"]
        self.message_max = cfg["NOTIFY_EMERGENCY_MESSAGE_MAX_LENGTH"]
        self.category_max = cfg["NOTIFY_EMERGENCY_CATEGORY_MAX_LENGTH"]
        self.ack_timeout = cfg["NOTIFY_EMERGENCY_ACK_TIMEOUT"]
        self.default_expiry = cfg["NOTIFY_EMERGENCY_DEFAULT_EXPIRY"]
        self.sweep_seconds = cfg["NOTIFY_EMERGENCY_SWEEP_SECONDS"]
        self._known_users: OrderedDict[str, str] = OrderedDict()
        self._watch: list[tuple[float, int, str]] = []
        #: ids this worker emitted whose acknowledgement it has not seen (the watcher skips the others)
        self._awaiting: set[int] = set()
        #: acknowledgements arriving together in this worker share one transaction
        self._acks: GroupCommit[tuple[int, str, str | None], Acked | None] = GroupCommit(self._acknowledge_batch)
        #: so do the rows of sends arriving together (each send gets its id, or its own error)
        self._creates: GroupCommit[dict[str, Any], int | Exception] = GroupCommit(self._create_batch)
        self._watch_cv = threading.Condition()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    # -- validation --------------------------------------------------------------------
    @property
    def user_exists(self) -> Callable[[str], bool] | None:
        """``user_exists(user_id) -> bool``, or None when there is no way to tell."""
        canonical = self.canonical_id
        if canonical is None:
            return None
        return lambda uid: canonical(uid) is not None

    def _user(self, user_id: Any) -> str:
        if isinstance(user_id, bool) or not isinstance(user_id, (int, str)):
            raise ValueError(f"user_id must be an int or a str (Flask-Login's get_id()); got {type(user_id).__name__}.")
        uid = str(user_id).strip()
        if not uid or len(uid) > 64:
            raise ValueError("user_id must be 1 to 64 characters long.")
        if self.canonical_id is None:
            return uid
        known = self._known_users.get(uid)
        if known is not None:
            return known
        canonical = self.canonical_id(uid)
        if canonical is None:
            raise ValueError(f"no such user {uid!r}: send() needs the id of an existing user.")
        if not canonical or len(canonical) > 64:
            raise ValueError(f"user {uid!r} has the id {canonical!r} (its get_id()), which is not "
                             "1 to 64 characters long: it cannot receive notifications.")
        self._known_users[uid] = canonical
        if len(self._known_users) > 10_000:
            self._known_users.popitem(last=False)
        return canonical

    def validate(self, user_id: Any, title: Any, message: Any, priority: Any, category: Any,
                 data: Any, action_url: Any) -> str:
        self.validate_content(title, message, priority, category, data, action_url)
        return self._user(user_id)

    def validate_content(self, title: Any, message: Any, priority: Any, category: Any, data: Any,
                         action_url: Any) -> None:
        """Everything but the recipient; ValueError naming what to fix."""
        if not isinstance(title, str) or not title.strip():
            raise ValueError("title must be a non-empty string.")
        check_no_nul(title=title, message=message, category=category)
        if len(title) > self.title_max:
            raise ValueError(f"title is {len(title)} characters; the limit is {self.title_max} "
                             "(NOTIFY_EMERGENCY_TITLE_MAX_LENGTH).")
        if not isinstance(message, str) or not message.strip():
            raise ValueError("message must be a non-empty string.")
        if len(message) > self.message_max:
            raise ValueError(f"message is {len(message)} characters; the limit is {self.message_max} "
                             "(NOTIFY_EMERGENCY_MESSAGE_MAX_LENGTH).")
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}.")
        if not isinstance(category, str) or not category or len(category) > self.category_max:
            raise ValueError(f"category must be a non-empty string of at most {self.category_max} characters.")
        if data is not None:
            try:
                # browsers parse no NaN or Infinity: a reply holding one would be lost whole
                json.dumps(data, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"data must be JSON-serialisable, without NaN or infinities: {exc}.") from None
        if action_url is not None:
            check_action_url(action_url)

    @staticmethod
    def expiry(expires_in: Any, default: float) -> float:
        """Seconds until the notification expires (0: never), from ``expires_in`` or the default."""
        if expires_in is None:
            return default
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) \
                or not math.isfinite(expires_in) or expires_in < 0:
            raise ValueError(f"expires_in must be a finite number of seconds, 0 or more (0: never "
                             f"expires), or None for NOTIFY_EMERGENCY_DEFAULT_EXPIRY; got {expires_in!r}.")
        if expires_in > MAX_EXPIRY_SECONDS:
            raise ValueError(f"expires_in is {expires_in!r} seconds; the limit is {MAX_EXPIRY_SECONDS} (100 years).")
        return float(expires_in)

    # -- sending -----------------------------------------------------------------------
    def route(self, user_id: str) -> str | None:
        """None if the primary path should be tried, else the reason it is skipped."""
        shared = self.route_all()
        if shared is not None:
            return shared
        assert self.notifier is not None  # route_all() said so
        if self.notifier.needs_connection and not self.state.is_connected(user_id):
            return "offline"
        if not self.breaker.allow():
            return "breaker-open"
        return None

    def send(self, user_id: Any, title: str, message: str, priority: str = "normal",
             category: str = "system", data: Any = None, action_url: str | None = None,
             expires_in: float | None = None, audience: str = "user") -> int:
        uid = self.validate(user_id, title, message, priority, category, data, action_url)
        expiry = self.expiry(expires_in, self.default_expiry)
        now = utcnow()
        skip = self.route(uid)
        common = self._common(title, message, priority, category, data, action_url, expiry, audience, now)
        stored = self._creates([self._row(common, uid, skip, now)])[0]
        if isinstance(stored, Exception):
            raise stored
        nid = stored
        payload = self._payload(common, nid, uid, now)
        if signals.notification_sent.receivers:
            signals.notification_sent.send(self.app, notification=payload)
        if skip:
            self.fallback(payload, skip)
            return nid
        self._offer(nid, uid, payload)
        return nid

    def send_many(self, user_ids: Any, title: str, message: str, priority: str = "normal",
                  category: str = "system", data: Any = None, action_url: str | None = None,
                  expires_in: float | None = None, audience: str = "user") -> list[int]:
        """One notification per user id, stored in batched inserts; the ids in ``user_ids``' order.

        Everything is validated before anything is stored. Connected users get one emit
        each, awaiting its acknowledgement as with :meth:`send`; the others go to the
        fallbacks, their pending markers set in one call.
        """
        if isinstance(user_ids, (str, bytes)) or not hasattr(user_ids, "__iter__"):
            raise ValueError("user_ids must be a list (or other iterable) of user ids, not "
                             f"{type(user_ids).__name__}; for one user, use send().")
        self.validate_content(title, message, priority, category, data, action_url)
        expiry = self.expiry(expires_in, self.default_expiry)
        uids = []
        for position, user_id in enumerate(user_ids):
            try:
                uids.append(self._user(user_id))
            except ValueError as exc:
                raise ValueError(f"user_ids[{position}]: {exc} Nothing was sent.") from None
        if not uids:
            return []
        now = utcnow()
        skipped = self._route_many(uids)
        common = self._common(title, message, priority, category, data, action_url, expiry, audience, now)
        ids = self.store.create_many([self._row(common, uid, skipped.get(uid), now) for uid in uids])
        payloads = [self._payload(common, nid, uid, now) for nid, uid in zip(ids, uids)]
        if signals.notification_sent.receivers:
            for payload in payloads:
                signals.notification_sent.send(self.app, notification=payload)
        offline = [(payload, skipped[payload["user_id"]]) for payload in payloads if payload["user_id"] in skipped]
        if offline:
            # one marker per user, set together; the receivers still hear of every row
            self.state.mark_pending_many({payload["user_id"] for payload, _ in offline})
            for payload, reason in offline:
                signals.notification_fallback.send(self.app, notification=payload, reason=reason, marked=True)
        for nid, payload in zip(ids, payloads):
            if payload["user_id"] not in skipped:
                self._offer(nid, payload["user_id"], payload)
        return ids

    def _create_batch(self, rows: list[dict[str, Any]]) -> list[int | Exception]:
        """Store the rows of sends that arrived together in one transaction (one multi-row
        INSERT, one commit): under load, the more senders wait, the cheaper each row.

        When the database refuses the batch's statement (a row it cannot take: a character
        its column's character set lacks, say), the transaction was rolled back whole and each
        row is stored alone, so only the send whose row it was fails. When the database could
        not be reached, or the connection broke (a commit whose outcome is unknown), every
        sender of the batch gets that error, as it would alone: no row is stored twice."""
        if len(rows) == 1:
            return [self.store.create(rows[0])]
        try:
            return list(self.store.create_many(rows))
        except Exception as exc:
            if not refused_by_the_database(exc):
                raise
        results: list[int | Exception] = []
        for row in rows:
            try:
                results.append(self.store.create(row))
            except Exception as alone:  # this send's own error, raised in its own thread
                results.append(alone)
        return results

    def _route_many(self, uids: list[str]) -> dict[str, str]:
        """user id -> why the primary path is skipped, for the users it is skipped for."""
        shared = self.route_all()
        skipped: dict[str, str] = {}
        for uid in uids:
            if uid in skipped:
                continue
            if shared is not None:
                skipped[uid] = shared
            elif self.notifier is not None and self.notifier.needs_connection and not self.state.is_connected(uid):
                skipped[uid] = "offline"
            elif not self.breaker.allow():
                skipped[uid] = "breaker-open"
        return skipped

    def route_all(self) -> str | None:
        """The reason every user skips the primary path now (no notifier, mode, paused), or None."""
        if self.notifier is None:
            return "no-primary"
        mode = self.state.get("mode", "normal")
        if mode != "normal":
            return f"mode-{mode}"
        if (self.state.get("paused") or {}).get("realtime"):
            return "paused"
        return None

    def _common(self, title: str, message: str, priority: str, category: str, data: Any,
                action_url: str | None, expiry: float, audience: str,
                now: dt.datetime) -> dict[str, Any]:
        return {"audience": audience, "title": title, "message": message, "priority": priority,
                "category": category, "data": data, "action_url": action_url, "created_at": now,
                "delivered": False, "expires_at": now + dt.timedelta(seconds=expiry) if expiry else None}

    def _row(self, common: dict[str, Any], uid: str, skip: str | None, now: dt.datetime) -> dict[str, Any]:
        return dict(common, user_id=uid, attempts=0 if skip else 1,
                    realtime_deadline=None if skip else now + dt.timedelta(seconds=self.ack_timeout))

    @staticmethod
    def _payload(common: dict[str, Any], nid: int, uid: str, now: dt.datetime) -> dict[str, Any]:
        return {"id": nid, "user_id": uid, "title": common["title"], "message": common["message"],
                "priority": common["priority"], "category": common["category"], "data": common["data"],
                "action_url": common["action_url"], "created_at": now.isoformat() + "Z"}

    def _offer(self, nid: int, uid: str, payload: dict[str, Any]) -> None:
        """Try the primary notifier for a stored row; any failure hands it to the fallbacks."""
        try:
            result = self.notifier.deliver(uid, payload)
            if result is False:
                raise RuntimeError("the notifier reported failure")
            if signals.notification_emitted.receivers:
                signals.notification_emitted.send(self.app, notification=payload)
        except Exception as exc:  # any failure of the primary goes to the fallbacks
            self.breaker.record_failure()
            self.store.release_realtime([nid])
            signals.notification_failed.send(self.app, notification=payload, error=str(exc), exception=exc)
            self.fallback(payload, "failed")
            return
        if result is True:
            self.acknowledge(nid, uid, "realtime")
        else:
            self._track(nid, uid)

    def fallback(self, payload: dict[str, Any], reason: str) -> None:
        signals.notification_fallback.send(self.app, notification=payload, reason=reason)

    def acknowledge(self, notification_id: int, user_id: str, channel: str | None = None) -> bool:
        """The client confirmed it has the notification: mark it delivered, once.
        ``channel``: see :meth:`acknowledge_many`."""
        return bool(self.acknowledge_many([notification_id], user_id, channel))

    def acknowledge_many(self, ids: list[int], user_id: str, channel: str | None = None) -> list[int]:
        """The browser showed these notifications (a socket ack, the ack outbox, the ack
        endpoint): mark the user's undelivered ones delivered, counted by ``channel``, else by
        the fallback that offered them, else as real time. The ids this call marked.

        Acknowledgements arriving together in this worker share one transaction and one
        breaker write (:class:`GroupCommit`); ``notification_delivered`` is sent once per
        channel counted, with each row's seconds from creation to delivery."""
        if not ids:
            return []
        marked = self._acks([(int(nid), user_id, channel) for nid in ids])
        by_channel: dict[str, list[tuple[int, float]]] = {}
        for nid, acked in zip(ids, marked):
            if acked is not None:
                by_channel.setdefault(acked.channel, []).append((int(nid), acked.seconds))
        for shown_by, group in by_channel.items():
            signals.notification_delivered.send(self.app, notification_ids=[nid for nid, _ in group],
                                                user_id=user_id, channel=shown_by,
                                                seconds=[seconds for _, seconds in group])
        return [int(nid) for nid, acked in zip(ids, marked) if acked is not None]

    def _acknowledge_batch(self, items: list[tuple[int, str, str | None]]) -> list[Acked | None]:
        """One transaction per explicit channel (None: counted by the row's offer) for the
        acknowledgements of a batch; for each item that marked its row, what it marked (one
        item per row, when two callers acknowledged the same id), else None."""
        by_channel: dict[str | None, list[tuple[int, str]]] = {}
        for nid, uid, channel in items:
            by_channel.setdefault(channel, []).append((nid, uid))
        marked: dict[tuple[str | None, int], Acked] = {}
        for channel, acks in by_channel.items():
            marked.update({(channel, nid): acked
                           for nid, acked in self.store.acknowledge_many(acks, channel).items()})
        # a second item of the same row marked nothing
        results: list[Acked | None] = [marked.pop((channel, nid), None) for nid, _, channel in items]
        with self._watch_cv:
            self._awaiting.difference_update(nid for nid, _, _ in items)
        # the socket delivered these: the real-time path works (a fallback's says nothing of it)
        realtime = sum(1 for r in results if r is not None and r.channel == "realtime")
        if realtime:
            self.breaker.record_success(realtime)
        return results

    # -- banners -------------------------------------------------------------------------
    def broadcast(self, message: Any, level: str = "warning", title: str | None = None,
                  starts_at: dt.datetime | None = None, ends_at: dt.datetime | None = None,
                  created_by: str | None = None, kind: str = "broadcast") -> int:
        if not isinstance(message, str) or not message.strip():
            raise ValueError("message must be a non-empty string.")
        if len(message) > self.message_max:
            raise ValueError(f"message is {len(message)} characters; the limit is {self.message_max}.")
        if level not in BANNER_LEVELS:
            raise ValueError(f"level must be one of {', '.join(BANNER_LEVELS)}; got {level!r}.")
        longest = min(self.title_max, BANNER_TITLE_LENGTH)
        if title is not None and (not isinstance(title, str) or len(title) > longest):
            raise ValueError(f"title must be a string of at most {longest} characters, or None.")
        check_no_nul(title=title, message=message)
        for name, value in (("starts_at", starts_at), ("ends_at", ends_at)):
            if value is not None and not isinstance(value, dt.datetime):
                raise ValueError(f"{name} must be a datetime (naive UTC, or aware) or None; "
                                 f"got {type(value).__name__} {value!r:.60}.")
        try:
            starts_at, ends_at = naive_utc(starts_at), naive_utc(ends_at)
        except OverflowError:
            raise ValueError("starts_at and ends_at must be times a database can store "
                             f"(years {BANNER_YEARS[0]} to {BANNER_YEARS[1]}).") from None
        for name, value in (("starts_at", starts_at), ("ends_at", ends_at)):
            if value is not None and not BANNER_YEARS[0] <= value.year <= BANNER_YEARS[1]:
                raise ValueError(f"{name} must be between the years {BANNER_YEARS[0]} and "
                                 f"{BANNER_YEARS[1]}; got {value.isoformat()}.")
        if starts_at and ends_at and ends_at <= starts_at:
            raise ValueError("ends_at must be after starts_at.")
        banner = {"title": title, "message": message, "level": level, "kind": kind,
                  "created_at": utcnow(), "created_by": created_by, "starts_at": starts_at, "ends_at": ends_at}
        bid = self.store.create_banner(banner)
        return bid

    # -- acknowledgement watcher -------------------------------------------------------
    def _track(self, nid: int, uid: str) -> None:
        with self._watch_cv:
            first = not self._watch
            heapq.heappush(self._watch, (time.monotonic() + self.ack_timeout, nid, uid))
            self._awaiting.add(nid)
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch_loop, name="notify-emergency-acks",
                                                 daemon=True)
                self._watcher.start()
            if first:  # a later deadline than the first one waited for changes nothing
                self._watch_cv.notify()

    def start_sweeper(self) -> None:
        """Start the watcher (which also sweeps rows whose acks never came, e.g. after a crash)."""
        with self._watch_cv:
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch_loop, name="notify-emergency-acks",
                                                 daemon=True)
                self._watcher.start()

    def _watch_loop(self) -> None:
        next_sweep = time.monotonic() + self.sweep_seconds
        while not self._stop.is_set():
            with self._watch_cv:
                now = time.monotonic()
                wait = next_sweep - now
                if self._watch:
                    # deadlines a moment apart are looked at together
                    wait = min(wait, self._watch[0][0] + WATCH_BATCH_SECONDS - now)
                if wait > 0:
                    self._watch_cv.wait(wait)
                now = time.monotonic()
                due: list[int] = []
                while self._watch and self._watch[0][0] <= now:
                    _, nid, _ = heapq.heappop(self._watch)
                    if nid in self._awaiting:  # acknowledged through this worker: nothing to do
                        self._awaiting.discard(nid)
                        due.append(nid)
            try:
                with self.app.app_context():
                    if due:
                        # acknowledged through another worker meanwhile: one read tells
                        self._expire(self.store.undelivered(due), count_failure=True)
                    if time.monotonic() >= next_sweep:
                        next_sweep = time.monotonic() + self.sweep_seconds
                        overdue = self.store.overdue(grace=self.ack_timeout)
                        if overdue:
                            self._expire([n for n, _ in overdue], count_failure=False)
                        # offers whose replies were lost: their users' next page or poll takes them
                        lapsed = [u for u in self.store.lapsed_offer_users() if not self.state.may_have_pending(u)]
                        if lapsed:
                            self.state.mark_pending_many(lapsed)
            except Exception as exc:  # the database may be down; rows stay and are swept later
                log.warning("flask-notify-emergency: acknowledgement watcher: %s", exc)
                self._stop.wait(1.0)

    def _expire(self, ids: list[int], count_failure: bool) -> None:
        released = self.store.release_realtime(ids)
        # receivers (a host's SMS or pager fallback) need the text, as on every other path
        payloads = self.store.payloads([nid for nid, _ in released])
        for nid, uid in released:
            if count_failure:
                self.breaker.record_failure()
            payload = payloads.get(nid) or {"id": nid, "user_id": uid}
            signals.notification_failed.send(
                self.app, notification=payload,
                error=f"no acknowledgement within {self.ack_timeout}s", exception=None)
            self.fallback(payload, "ack-timeout")

    def stop(self) -> None:
        self._stop.set()
        with self._watch_cv:
            self._watch_cv.notify_all()

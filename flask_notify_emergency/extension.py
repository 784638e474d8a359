"""The :class:`NotifyEmergency` extension: wiring, config, request hooks, Jinja helpers."""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from flask import Flask, current_app

from . import cli, signals
from . import config as cfgmod
from .audit import AuditLog
from .automation import WorkerStart, monitor
from .communicate import alerts
from .detect import EvidenceLog, evidence
from .control import Control
from .delivery import (  # noqa: F401 (re-exported)
    CallableNotifier,
    CircuitBreaker,
    Dispatcher,
    NotificationStore,
    PageHelpers,
    SocketIONotifier,
    fallbacks,
    i18n,
    realtime,
    render_banners,
    render_scripts,
    steady_engine,
)
from .detect import check_message_queue
from .learn import prometheus
from .models import Models, models_for, utcnow
from .respond import cluster_actions, drill_faults, worker_mode
from .state import RedisState, SharedState
from .views import admin_realtime, make_blueprint

EXTENSION_KEY = "notify_emergency"
BANNER_CACHE_SECONDS = 30.0


class NotifyEmergencyState:
    """Everything the extension keeps for one app, in ``app.extensions["notify_emergency"]``."""

    def __init__(self, app: Flask, db: Any, socketio: Any, notifier: Any,
                 canonical_id: Callable[[str], str | None] | None) -> None:
        cfg = app.config
        self.app = app
        #: the NotifyEmergency that registered this state (its class builds sandbox apps)
        self.extension: Any = None
        self.db = db
        self.socketio = socketio
        self.models: Models = models_for(db)
        with app.app_context():
            self.engine = db.engine
        #: the store's own steady pool on the same database (the host's engine on SQLite)
        self.store_engine = steady_engine(self.engine, cfg["NOTIFY_EMERGENCY_DATABASE_POOL_SIZE"],
                                          cfg.get("SQLALCHEMY_ENGINE_OPTIONS"))
        self.store = NotificationStore(self.store_engine, self.models, cfg["NOTIFY_EMERGENCY_CLAIM_CONFIRM_TIMEOUT"])
        self.namespace: str = cfg["NOTIFY_EMERGENCY_SOCKETIO_NAMESPACE"]
        self.blueprint_name: str = cfg["NOTIFY_EMERGENCY_BLUEPRINT_NAME"]
        self.ack_cookie: str = cfg["NOTIFY_EMERGENCY_ACK_COOKIE_NAME"]
        self.receivers: list[Callable[..., Any]] = []
        self.connected_sids: dict[str, str] = {}
        backend = cfg["NOTIFY_EMERGENCY_STATE_BACKEND"]
        if backend == "auto":
            backend = "redis" if cfg["NOTIFY_EMERGENCY_REDIS_URL"] else "memory"
        refresh = cfg["NOTIFY_EMERGENCY_STATE_REFRESH_SECONDS"]
        # the state's first load (RedisState connects at once) reads switches through the
        # control, so the control exists first and gets its state right after
        self.control = Control(app, self.engine, self.models, None)
        if backend == "redis":
            self.state: SharedState = RedisState(self._load_state, cfg["NOTIFY_EMERGENCY_REDIS_URL"],
                                                 cfg["NOTIFY_EMERGENCY_REDIS_KEY_PREFIX"], refresh)
        else:
            self.state = SharedState(self._load_state, refresh)
        self.control.state = self.state
        self.audit = AuditLog(self.engine, self.models)
        self.evidence = EvidenceLog(self.state)
        self.breaker = CircuitBreaker(self.state, cfg, self._breaker_changed, write=self._write_breaker)
        if notifier is not None:
            self.notifier: Any = CallableNotifier(notifier, cfg["NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT"])
        elif socketio is not None:
            self.notifier = SocketIONotifier(socketio, self.namespace, cfg["NOTIFY_EMERGENCY_USER_ROOM_PREFIX"],
                                             cfg["NOTIFY_EMERGENCY_NOTIFIER_TIMEOUT"])
        else:
            self.notifier = None
        self.worker_start = WorkerStart()
        self.dispatcher = Dispatcher(app, self.store, self.state, self.breaker, self.notifier, canonical_id)
        self._banner_cache: list[dict[str, Any]] | None = None
        self._banner_version: Any = None
        self._banner_at = 0.0
        self.page_helpers = PageHelpers(self)

    def _load_state(self) -> tuple[dict[str, Any], set[str]]:
        with self.app.app_context():
            return self.control.load(), self.store.pending_users_changed()

    def _write_breaker(self, key: str, value: Any) -> None:
        """Breaker changes go to the database too, so a worker started later sees them."""
        try:
            self.control.write(key, value, "circuit breaker")
        except Exception as exc:  # database down: the running workers still hear of it
            self.app.logger.warning("flask-notify-emergency: could not store the breaker state: %s", exc)
            self.state.set(key, value)

    def _breaker_changed(self, old: str, new: str) -> None:
        signals.breaker_changed.send(self.app, old=old, new=new)

    # -- banners -------------------------------------------------------------------------
    def banners(self) -> list[dict[str, Any]]:
        """Active banners, from an in-process cache invalidated through the shared state."""
        version = self.state.get("banners_version")
        now = time.monotonic()
        if (self._banner_cache is None or version != self._banner_version
                or now - self._banner_at > BANNER_CACHE_SECONDS):
            try:
                # scheduled banners are cached too, so each appears when its time comes
                self._banner_cache = self.store.active_banners(include_scheduled=True)
            except Exception as exc:  # the page must render even with the database down
                self.app.logger.warning("flask-notify-emergency: could not load banners: %s", exc)
                self._banner_cache = self._banner_cache or []
            self._banner_version, self._banner_at = version, now
        if not self._banner_cache:
            return []  # the usual case, on every page: no clock, no parsing

        now_utc = utcnow()
        return [b for b in self._banner_cache
                if (b["starts_at"] is None or _parse_stamp(b["starts_at"]) <= now_utc)
                and (b["ends_at"] is None or _parse_stamp(b["ends_at"]) > now_utc)]

    def broadcast(self, message: str, level: str = "warning", title: str | None = None, *,
                  starts_at: Any = None, ends_at: Any = None, created_by: str | None = None) -> int:
        """Post one site-wide banner (see :meth:`NotifyEmergency.broadcast`); return its id."""
        bid = self.dispatcher.broadcast(message, level, title, starts_at, ends_at, created_by)
        self.banners_changed(created_by)
        banner = next((b for b in self.store.active_banners() if b["id"] == bid), None)
        if banner is not None:
            signals.banner_posted.send(self.app, banner=banner)
            if self.notifier is not None and self.control.mode == "normal" and not self.control.paused().get("realtime"):
                try:
                    self.notifier.broadcast_banner(banner)
                except Exception as exc:  # pages show it anyway
                    self.app.logger.warning("flask-notify-emergency: live banner emit failed: %s", exc)
        return bid

    def banners_changed(self, actor: str | None = None) -> None:
        self.control.write("banners_version", uuid.uuid4().hex, actor)

    def close(self) -> None:
        self.dispatcher.stop()
        self.state.close()
        if self.store_engine is not self.engine:
            self.store_engine.dispose()


class NotifyEmergency:
    """Keeps a Flask app's notifications flowing when its real-time layer breaks.

    ::

        notify = NotifyEmergency(app, db=db, socketio=socketio)
        notify.send(user.id, "Caption ready", "Your image has alt text now.")

    :param db: the host's Flask-SQLAlchemy object; our tables live on it.
    :param socketio: the host's Flask-SocketIO object, the primary (real-time) notifier.
    :param notifier: instead of ``socketio``, any ``callable(user_id, payload)`` returning
        True (delivered), None (dispatched, ack later via :meth:`acknowledge`) or raising.
    :param user_exists: ``callable(user_id) -> bool``; default: Flask-Login's user loader, whose
        user's ``get_id()`` is then the form the id is stored in (``"03"`` is stored as ``"3"``).
    """

    def __init__(self, app: Flask | None = None, *, db: Any = None, socketio: Any = None,
                 notifier: Callable[[str, dict[str, Any]], Any] | None = None,
                 user_exists: Callable[[str], bool] | None = None) -> None:
        self.db = db
        self.socketio = socketio
        self.notifier = notifier
        self.user_exists = user_exists
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, db: Any = None, socketio: Any = None,
                 notifier: Callable[[str, dict[str, Any]], Any] | None = None,
                 user_exists: Callable[[str], bool] | None = None) -> None:
        """Register the extension on ``app``."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "NotifyEmergency is already registered on this app. Call init_app(app) once per "
                "app, or create a new NotifyEmergency() for another app.")
        db = db if db is not None else self.db
        socketio = socketio if socketio is not None else self.socketio
        notifier = notifier if notifier is not None else self.notifier
        if db is None:
            raise RuntimeError("NotifyEmergency needs a Flask-SQLAlchemy 'db': pass init_app(app, db=db).")
        if "sqlalchemy" not in app.extensions:
            raise RuntimeError("NotifyEmergency needs db.init_app(app) to run first: "
                               "create SQLAlchemy(app) before NotifyEmergency(app, db=db).")
        cfgmod.apply_defaults(app.config, app.instance_path)
        cfgmod.validate(app.config)
        if socketio is not None:
            check_message_queue(socketio)
        user_exists = user_exists or self.user_exists
        canonical_id = _checked_id(user_exists) if user_exists is not None else _login_user_id(app)
        ext_state = NotifyEmergencyState(app, db, socketio, notifier, canonical_id)
        ext_state.extension = self
        app.extensions[EXTENSION_KEY] = ext_state

        fallbacks.connect_receivers(app, ext_state)
        evidence.connect_receivers(app, ext_state)
        ext_state.worker_start.add(ext_state.dispatcher.start_sweeper)
        app.before_request(ext_state.worker_start.before_request)
        app.before_request(lambda: fallbacks.flash_pending(ext_state))
        # the flashes a page shows go into the ack outbox cookie: the browser confirms them
        app.after_request(lambda response: fallbacks.settle_outbox(ext_state, response))
        # globals rather than a context processor: nothing runs for a template that calls neither
        for name, helper in ext_state.page_helpers.template_globals().items():
            app.add_template_global(helper, name)
        for name, translate in i18n.template_globals().items():
            app.add_template_global(translate, name)
        if socketio is not None:
            realtime.register(socketio, ext_state)

        app.register_blueprint(make_blueprint(ext_state))
        _register_optional(app, ext_state)
        if app.config["NOTIFY_EMERGENCY_START_ON_BOOT"]:
            ext_state.worker_start.boot()

    # -- public API ----------------------------------------------------------------------
    @staticmethod
    def state_for(app: Flask | None = None) -> NotifyEmergencyState:
        """The per-app state (``app.extensions["notify_emergency"]``)."""
        app = app or _current_app()
        try:
            return app.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError("NotifyEmergency is not registered on this app: call "
                               "notify.init_app(app, db=db, socketio=socketio) first.") from None

    def send(self, user_id: int | str, title: str, message: str, priority: str = "normal",
             category: str = "system", data: Any = None, *, action_url: str | None = None,
             expires_in: float | None = None) -> int:
        """Store a notification for one user and deliver it exactly once; return its id.

        Raises :class:`ValueError` (storing nothing) when the input is unusable.
        """
        return self.state_for().dispatcher.send(user_id, title, message, priority, category, data,
                                                action_url, expires_in)

    def send_many(self, user_ids: Iterable[int | str], title: str, message: str, priority: str = "normal",
                  category: str = "system", data: Any = None, *, action_url: str | None = None,
                  expires_in: float | None = None) -> list[int]:
        """The same notification for many users, each delivered exactly once; their ids in order.

        Much cheaper than a loop of :meth:`send`: batched inserts and one commit, one emit per
        connected user, the offline users' pending markers set together. Raises
        :class:`ValueError` (storing nothing) when any input or any user id is unusable.
        """
        return self.state_for().dispatcher.send_many(user_ids, title, message, priority, category, data,
                                                     action_url, expires_in)

    def broadcast(self, message: str, level: str = "warning", title: str | None = None, *,
                  starts_at: Any = None, ends_at: Any = None, created_by: str | None = None) -> int:
        """Post one site-wide banner every user sees on every page; return its id."""
        return self.state_for().broadcast(message, level, title, starts_at=starts_at, ends_at=ends_at,
                                          created_by=created_by)

    def acknowledge(self, notification_id: int, user_id: int | str) -> bool:
        """Confirm delivery of a notification sent through a host ``notifier=`` callable."""
        return self.state_for().dispatcher.acknowledge(int(notification_id), str(user_id))

    @property
    def mode(self) -> str:
        """The cluster's delivery mode: 'normal', 'emergency' or 'legacy'."""
        return self.state_for().control.mode


def _current_app() -> Flask:
    try:
        # Flask annotates current_app as Flask, though it is a LocalProxy that has this method
        return current_app._get_current_object()  # type: ignore[attr-defined]
    except RuntimeError:
        raise RuntimeError("NotifyEmergency needs an app context: call it inside a request or a "
                           "CLI command, or within 'with app.app_context():'.") from None


def _checked_id(user_exists: Callable[[str], bool]) -> Callable[[str], str | None]:
    """A host's ``user_exists(user_id) -> bool`` as a canonical-id function: the id as given."""
    def canonical(user_id: str) -> str | None:
        return user_id if user_exists(user_id) else None

    return canonical


def _login_user_id(app: Flask) -> Callable[[str], str | None] | None:
    """Through Flask-Login's user loader: the loaded user's ``get_id()`` (the form the session
    carries, so "03" or "٣" becomes "3"), or None when no user loads."""
    manager = getattr(app, "login_manager", None)
    loader = getattr(manager, "_user_callback", None)
    if loader is None:
        return None

    def canonical(user_id: str) -> str | None:
        with app.app_context():
            try:
                user = loader(user_id)
            except (ValueError, TypeError, OverflowError, sa.exc.DataError):
                return None  # an id the loader (or its database) cannot even take as an id
            uid = user.get_id() if user is not None else None
        return None if uid is None else str(uid)

    return canonical


def _register_optional(app: Flask, ext_state: NotifyEmergencyState) -> None:
    """Hook in the parts that live in their own modules (CLI, monitor, admin namespace, ...)."""
    for part in (cli, monitor, admin_realtime, worker_mode, alerts, cluster_actions, drill_faults, prometheus):
        part.init_app(app, ext_state)


def _parse_stamp(stamp: str) -> Any:
    """A payload time (naive UTC ISO with a 'Z') back to a datetime; comparing the strings
    goes wrong when one of them has no microseconds."""
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.rstrip("Z"))

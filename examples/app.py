"""A small app using flask-notify-emergency: Flask-Login users, Flask-SQLAlchemy on SQLite,
Flask-SocketIO, and a page that sends notifications.

Run it with ``make demo`` and open http://127.0.0.1:5000 (admin / admin, alice / alice,
bob / bob). The dashboard is at /emergency/ for the admin. The ``flask emergency`` commands
act on the same database: ``flask --app examples/app.py:flask_app emergency status``.

Every setting comes from the environment as well: ``FLASK_<KEY>`` sets ``app.config[KEY]``
(Flask's ``from_prefixed_env``; values that parse as JSON are taken as JSON), e.g.
``FLASK_SQLALCHEMY_DATABASE_URI``, ``FLASK_NOTIFY_EMERGENCY_REDIS_URL``,
``FLASK_SOCKETIO_MESSAGE_QUEUE``, ``FLASK_SOCKETIO_ASYNC_MODE``, ``FLASK_NOTIFY_EMERGENCY_SMTP_HOST``,
``FLASK_NOTIFY_EMERGENCY_ALERT_EMAILS='["ops@example.com"]'``. The short names ``SECRET_KEY``,
``DATABASE_URL`` and ``NOTIFY_EMERGENCY_REDIS_URL`` are read too. See docs/deploy.md.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy
from flask import Flask, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, login_required, login_user, logout_user
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_notify_emergency import NotifyEmergency

DEMO_USERS = (("admin", "admin", True), ("alice", "alice", False), ("bob", "bob", False))


def create_app(config: dict[str, Any] | None = None) -> tuple[Flask, SocketIO]:
    """Build the example app; ``config`` overrides defaults (tests use it)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "demo-only-secret"),
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL", "sqlite:///" + os.path.join(app.instance_path, "demo.sqlite")),
        NOTIFY_EMERGENCY_REDIS_URL=os.environ.get("NOTIFY_EMERGENCY_REDIS_URL") or None,
        SOCKETIO_MESSAGE_QUEUE=None,
        # the development server and gunicorn's threaded workers; "gevent" or "eventlet" under
        # those gunicorn workers (Flask-SocketIO would pick them just because they are installed)
        SOCKETIO_ASYNC_MODE="threading",
    )
    app.config.from_prefixed_env()  # FLASK_<KEY>: every setting, from the environment
    app.config.update(config or {})
    os.makedirs(app.instance_path, exist_ok=True)

    class Base(DeclarativeBase):
        """One declarative base per app, so several apps can live in one process."""

    db = SQLAlchemy(app, model_class=Base)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "demo_user"
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True, nullable=False)
        password = db.Column(db.String(80), nullable=False)
        is_admin = db.Column(db.Boolean, nullable=False, default=False)

    languages = app.config.get("DEMO_LANGUAGES")
    if languages:  # e.g. ["en", "de"]: Flask-Babel picks one from the browser's Accept-Language
        from flask_babel import Babel

        Babel(app, locale_selector=lambda: request.accept_languages.best_match(languages) or languages[0])

    login_manager = LoginManager(app)
    login_manager.login_view = "login"

    @login_manager.user_loader
    def load_user(user_id: str) -> Any:
        return db.session.get(User, int(user_id)) if user_id.isdigit() else None

    socketio = SocketIO(app, async_mode=app.config["SOCKETIO_ASYNC_MODE"],
                        message_queue=app.config["SOCKETIO_MESSAGE_QUEUE"],
                        channel=app.config.get("SOCKETIO_CHANNEL", "flask-socketio"))
    app.config.setdefault("NOTIFY_EMERGENCY_ADMIN_USER_IDS",
                          lambda: [str(u.id) for u in User.query.filter_by(is_admin=True)])
    notify = NotifyEmergency(app, db=db, socketio=socketio)

    try:
        with app.app_context():
            db.create_all()
            for name, password, admin in DEMO_USERS:
                if User.query.filter_by(username=name).first() is None:
                    db.session.add(User(username=name, password=password, is_admin=admin))
            db.session.commit()
    except sqlalchemy.exc.OperationalError as exc:
        # the app still starts (and `flask emergency ...` still runs) while the database is
        # down; the tables and demo users are made on the next start with the database up
        app.logger.info("demo: database unreachable, tables not created: %s", str(exc).splitlines()[0])

    @app.route("/")
    @login_required
    def index() -> str:
        users = User.query.order_by(User.id).all()
        return render_template("index.html", users=users)

    @app.route("/send", methods=["POST"])
    @login_required
    def send() -> Any:
        title, message = request.form.get("title", ""), request.form.get("message", "")
        priority = request.form.get("priority", "normal")
        try:
            if "user_ids" in request.form:  # several users at once: "1,2,3"
                notify.send_many(request.form["user_ids"].split(","), title, message, priority=priority)
            else:
                notify.send(request.form.get("user_id", ""), title, message, priority=priority)
        except ValueError as exc:
            flash(f"Not sent: {exc}", "danger")
        else:
            flash("Sent.", "info")
        return redirect(url_for("index"))

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            user = User.query.filter_by(username=request.form.get("username", "")).first()
            if user is None or user.password != request.form.get("password"):
                flash("Wrong user name or password.", "danger")
                return render_template("login.html"), 401
            login_user(user)
            target = request.args.get("next") or ""
            return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("index"))
        return render_template("login.html")

    @app.route("/logout")
    def logout() -> Any:
        logout_user()
        return redirect(url_for("login"))

    @app.context_processor
    def dashboard_link() -> dict[str, Any]:
        endpoint = "notify_emergency.overview"
        return {"dashboard_url": url_for(endpoint) if endpoint in app.view_functions else None}

    app.extensions["demo"] = {"db": db, "User": User, "notify": notify, "socketio": socketio}
    return app, socketio


def flask_app() -> Flask:
    """The app alone, for the ``flask`` command line (``create_app`` also returns the
    Socket.IO server, which ``flask`` cannot use)::

        flask --app examples/app.py:flask_app emergency status
    """
    return create_app()[0]


def main() -> None:
    app, socketio = create_app()
    port = int(os.environ.get("PORT", "5000"))
    print(f" * flask-notify-emergency demo on http://127.0.0.1:{port}  (admin/admin, alice/alice, bob/bob)")
    socketio.run(app, host="127.0.0.1", port=port, allow_unsafe_werkzeug=True)


if __name__ == "__main__":
    main()

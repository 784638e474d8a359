"""A host app that manages its schema with Flask-Migrate, as the README's second quick start.

``flask --app tests.support.migrating_host db …`` and ``… emergency …``: the database comes
from ``FLASK_SQLALCHEMY_DATABASE_URI`` and the migrations folder from ``MIGRATIONS_DIR``. It
never calls ``db.create_all()``: every table, ours and the host's, comes from migrations.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_notify_emergency import NotifyEmergency


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="migrating-host", NOTIFY_EMERGENCY_MONITOR_ENABLED=False)
    app.config.from_prefixed_env()
    app.config.update(config or {})

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(app, model_class=Base)

    class Member(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        """The host's own table, migrated beside ours."""

        __tablename__ = "host_member"
        id = db.Column(db.Integer, primary_key=True)
        name = db.Column(db.String(80), nullable=False)

    login = LoginManager(app)
    login.user_loader(lambda user_id: db.session.get(Member, int(user_id)) if user_id.isdigit() else None)
    Migrate(app, db, directory=os.environ.get("MIGRATIONS_DIR", "migrations"))
    socketio = SocketIO(app, async_mode="threading")
    notify = NotifyEmergency(app, db=db, socketio=socketio)
    app.extensions["host"] = {"db": db, "Member": Member, "notify": notify}
    return app

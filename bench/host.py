"""A host app for benchmarks, built the way a user builds one: Flask-Login users,
Flask-SQLAlchemy on a SQLite file, Flask-SocketIO, and one logged-in page.

``build_host(directory, extension=False)`` builds the very same app without
NotifyEmergency and with the page template minus the two helper calls, so a comparison
of the two measures exactly what the extension adds.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask, abort, render_template, request
from flask_login import LoginManager, UserMixin, login_required, login_user
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_notify_emergency import NotifyEmergency

#: The two lines the extension asks a host to put in its base template.
HELPER_LINES = ("{{ notify_emergency_banners() }}", "{{ notify_emergency_scripts() }}")

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Home</title>
  <style>body { font: 16px/1.5 system-ui, sans-serif; } .flash { padding: 8px; }</style>
</head>
<body>
  {{ notify_emergency_banners() }}
  <header><strong>Host app</strong>
    <nav>Signed in as <span class="username">{{ current_user.username }}</span></nav></header>
  <main>
    {% for category, message in get_flashed_messages(with_categories=true) %}
      <div class="flash {{ category }}" role="status">{{ message }}</div>
    {% endfor %}
    <h1>Hello, {{ current_user.username }}</h1>
    <form method="post" action="/send">
      <label>To <select name="user_id">{% for u in users %}<option value="{{ u.id }}">{{ u.username }}</option>{% endfor %}</select></label>
      <label>Title <input name="title" required maxlength="200"></label>
      <label>Message <textarea name="message" required></textarea></label>
      <button type="submit">Send</button>
    </form>
  </main>
  {{ notify_emergency_scripts() }}
</body>
</html>
"""


@dataclass
class Host:
    """One built host app and the objects a benchmark needs from it."""

    app: Flask
    db: Any
    socketio: SocketIO
    User: Any
    notify: NotifyEmergency | None

    def user_id(self, username: str) -> str:
        with self.app.app_context():
            return str(self.User.query.filter_by(username=username).one().id)

    def login(self, username: str) -> Any:
        """A Flask test client logged in as ``username``."""
        client = self.app.test_client()
        response = client.post("/login", data={"username": username, "password": username})
        if response.status_code != 302:
            raise RuntimeError(f"login as {username!r} failed: {response.status_code}")
        return client

    def add_users(self, count: int, prefix: str = "user") -> None:
        """Bulk-insert ``count`` users (one executemany) named ``<prefix><n>``."""
        rows = [{"username": f"{prefix}{n}", "password": f"{prefix}{n}", "is_admin": False}
                for n in range(count)]
        with self.app.app_context():
            with self.db.engine.begin() as conn:
                conn.execute(self.User.__table__.insert(), rows)

    def user_count(self) -> int:
        with self.app.app_context():
            return int(self.db.session.scalar(sa.select(sa.func.count()).select_from(self.User)) or 0)

    def close(self) -> None:
        with self.app.app_context():
            ext = self.app.extensions.get("notify_emergency")
            if ext is not None:
                ext.close()
            self.db.session.remove()
            self.db.engine.dispose()


def build_host(directory: str, *, extension: bool = True, config: dict[str, Any] | None = None) -> Host:
    """Build the host app on a SQLite file in ``directory`` with users admin, alice, bob."""
    templates = os.path.join(directory, "templates")
    os.makedirs(templates, exist_ok=True)
    page = PAGE
    if not extension:
        for line in HELPER_LINES:
            page = page.replace(f"  {line}\n", "")
    with open(os.path.join(templates, "page.html"), "w", encoding="utf-8") as f:
        f.write(page)

    app = Flask(f"bench_host_{uuid.uuid4().hex[:8]}", template_folder=templates,
                instance_path=os.path.join(directory, "instance"))
    app.config.update(
        SECRET_KEY="bench-secret",
        SQLALCHEMY_DATABASE_URI="sqlite:///" + os.path.join(directory, "host.sqlite"),
        # a benchmark measures the request path, not the background health monitor
        NOTIFY_EMERGENCY_MONITOR_ENABLED=False,
    )
    app.config.update(config or {})
    class Base(DeclarativeBase):  # one per app: each host has its own metadata
        pass

    db = SQLAlchemy(app, model_class=Base)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "host_user"
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True, nullable=False)
        password = db.Column(db.String(80), nullable=False)
        is_admin = db.Column(db.Boolean, nullable=False, default=False)

    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> Any:
        return db.session.get(User, int(user_id)) if user_id.isdigit() else None

    socketio = SocketIO(app, async_mode="threading")
    notify = NotifyEmergency(app, db=db, socketio=socketio) if extension else None

    @app.route("/")
    @login_required
    def index() -> str:
        users = User.query.order_by(User.id).limit(10).all()
        return render_template("page.html", users=users)

    @app.route("/login", methods=["POST"])
    def login() -> Any:
        user = User.query.filter_by(username=request.form.get("username", "")).first()
        if user is None or user.password != request.form.get("password"):
            abort(401)
        login_user(user)
        return "", 302, {"Location": "/"}

    with app.app_context():
        db.create_all()
        for name in ("admin", "alice", "bob"):
            db.session.add(User(username=name, password=name, is_admin=name == "admin"))
        db.session.commit()
    return Host(app, db, socketio, User, notify)

"""Who may do what: the current user's id, the admin check, and CSRF tokens."""

from __future__ import annotations

import functools
import hmac
import secrets
from typing import Any, Callable, TypeVar

import sqlalchemy as sa
from flask import abort, current_app, jsonify, redirect, request, session, url_for

F = TypeVar("F", bound=Callable[..., Any])
CSRF_SESSION_KEY = "_notify_emergency_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


try:  # imported once: an import statement in current_user_obj() ran on every page
    from flask_login import current_user as _login_current_user
except ImportError:  # pragma: no cover - Flask-Login is a dependency
    _login_current_user = None


def current_user_obj() -> Any:
    return _login_current_user


def current_user_id() -> str | None:
    """The logged-in user's id as a string, or None."""
    user = current_user_obj()
    if user is None:
        return None
    # every attribute read through Flask-Login's proxy looks the user up again; once will do
    user = user._get_current_object()
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    uid = user.get_id()
    return None if uid is None else str(uid)


def default_is_admin(user: Any) -> bool:
    """``user.is_admin`` if it exists, else an 'admin' role in ``user.roles``."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    flag = getattr(user, "is_admin", None)
    if flag is not None:
        return bool(flag() if callable(flag) else flag)
    roles = getattr(user, "roles", None) or ()
    return any(getattr(r, "name", r) == "admin" for r in roles)


def is_admin() -> bool:
    return user_is_admin(current_user_obj())


def user_is_admin(user: Any) -> bool:
    """The admin check (``NOTIFY_EMERGENCY_IS_ADMIN`` or :func:`default_is_admin`) for ``user``."""
    check = current_app.config["NOTIFY_EMERGENCY_IS_ADMIN"] or default_is_admin
    return bool(user is not None and getattr(user, "is_authenticated", False) and check(user))


def load_user(app: Any, user_id: str) -> Any:
    """The user ``user_id`` names now, through Flask-Login's user loader (None: gone, or no
    loader). Needs an app context."""
    loader = getattr(getattr(app, "login_manager", None), "_user_callback", None)
    if loader is None:
        return None
    try:
        return loader(user_id)
    except (ValueError, TypeError, OverflowError, sa.exc.DataError):
        return None  # not an id the loader (or its database) can take


def actor_name() -> str:
    """A readable name for the audit log."""
    user = current_user_obj()
    if user is None or not getattr(user, "is_authenticated", False):
        return "anonymous"
    name = getattr(user, "username", None) or getattr(user, "email", None) or ""
    return f"{name} (id {user.get_id()})" if name else f"user {user.get_id()}"


def csrf_token() -> str:
    token = session.get(CSRF_SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return str(token)


def check_csrf() -> None:
    """Abort with 400 unless the request carries this session's CSRF token."""
    expected = session.get(CSRF_SESSION_KEY)
    body = request.get_json(silent=True) if request.is_json else None
    if request.is_json and not isinstance(body, dict) and request.get_data(cache=True):
        got = "text that is not JSON" if body is None and request.get_data() != b"null" else type(body).__name__
        abort(400, description="The JSON body must be an object, like {\"csrf_token\": \"...\"}; "
                               f"got {got}.")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if sent is None and body is not None:
        sent = body.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        abort(400, description="Missing or invalid CSRF token: reload the page and try again.")


def _wants_json() -> bool:
    return request.path.startswith(current_app.config["NOTIFY_EMERGENCY_URL_PREFIX"] + "/api/") or \
        request.accept_mimetypes.best == "application/json"


def user_required(view: F) -> F:
    """Logged-in users only (401 JSON otherwise); POSTs need the CSRF token."""
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user_id() is None:
            return jsonify(error="login required"), 401
        if request.method == "POST":
            check_csrf()
        return view(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def admin_required(view: F) -> F:
    """Admins only: anonymous -> login (401 for the API), others -> 403; POSTs need CSRF."""
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user_id() is None:
            if _wants_json():
                return jsonify(error="login required"), 401
            login_view = current_app.config["NOTIFY_EMERGENCY_LOGIN_VIEW"] or getattr(
                getattr(current_app, "login_manager", None), "login_view", None)
            if login_view:
                return redirect(url_for(login_view, next=request.full_path.rstrip("?")))
            abort(401)
        if not is_admin():
            if _wants_json():
                return jsonify(error="admins only"), 403
            abort(403)
        if request.method == "POST":
            check_csrf()
        return view(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


#: Set in the WSGI environ of requests the extension makes itself (page checks).
SYNTHETIC = "notify_emergency.synthetic"


def is_synthetic(environ: dict[str, Any]) -> bool:
    """True for a request the extension made itself (it starts no background work)."""
    return bool(environ.get(SYNTHETIC))

"""The two Jinja helpers a host puts in its base template: ``notify_emergency_banners()``
and ``notify_emergency_scripts()``.

They run on every page, so they are kept cheap:

* they are template globals, not a context processor: a template that calls neither pays
  nothing for them;
* called from a template, a partial renders the way ``{% include %}`` does, in a context
  shared with the page's: Flask's context processors do not run again for each partial and
  the template globals are not copied again;
* the client's URLs are built once per script root instead of five ``url_for`` calls a page;
* the output of a shipped partial is reused while what it shows stays the same. For the
  script tag that is everything but the CSRF token, which is put in afterwards. A partial
  the host overrides may show anything (the user, the request), and is rendered every time.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from flask import has_request_context, render_template, request, url_for
from jinja2 import Environment, Template, pass_context
from jinja2.runtime import Context
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from .. import assets as resources
from ..access import csrf_token, current_user_id
from .i18n import current_locale, gettext
from .notifier import SocketIONotifier

BANNERS_TEMPLATE = "notify_emergency/_banners.html"
SCRIPTS_TEMPLATE = "notify_emergency/_scripts.html"
#: Stands in for the CSRF token in a reused script tag; JSON and HTML escaping leave it as is.
TOKEN_STAND_IN = "notify-emergency-csrf-token-stand-in"
#: Script tags kept (one per mode x logged in/out x script root, so a handful in practice).
REUSED_SCRIPT_TAGS = 32
#: Tokens made by :func:`..access.csrf_token` (URL-safe base64): JSON and HTML need no escapes.
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


class PageHelpers:
    """Renders the page helpers of one app and keeps what can be reused between pages."""

    def __init__(self, ext_state: Any) -> None:
        self.ext = ext_state
        self._shipped_dir = os.path.normpath(resources.templates_dir()) + os.sep
        self._urls: dict[str, dict[str, str]] = {}
        self._banners: tuple[Any, Markup] | None = None
        #: the script tags, split where the token goes (``None`` after: no token in it)
        self._scripts: dict[Any, tuple[str, str | None]] = {}
        self._templates: dict[str, Template] = {}
        self._env: Environment | None = None

    def template_globals(self) -> dict[str, Callable[..., Markup]]:
        """The helpers by name, as the extension adds them to the app's template globals."""

        @pass_context
        def notify_emergency_banners(context: Context) -> Markup:
            return self.banners(context)

        @pass_context
        def notify_emergency_scripts(context: Context) -> Markup:
            return self.scripts(context)

        return {"notify_emergency_banners": notify_emergency_banners,
                "notify_emergency_scripts": notify_emergency_scripts}

    # -- banners -------------------------------------------------------------------------
    def banners(self, context: Context | None = None) -> Markup:
        """HTML for the active banners (and the emergency notice), text escaped."""
        ext = self.ext
        values = {"banners": ext.banners(), "mode": ext.control.mode}
        if context is None:
            return Markup(render_template(BANNERS_TEMPLATE, **values))
        template = self._template(BANNERS_TEMPLATE)
        key = (template, values["mode"], current_locale(),
               tuple((b["id"], b["level"], b["title"], b["message"]) for b in values["banners"]))
        reused = self._banners
        if reused is not None and reused[0] == key:
            return reused[1]
        html = render_shared(template, context, values)
        if self._shipped(template):  # it shows the mode and those four fields, nothing else
            self._banners = (key, html)
        return html

    # -- the script tag ------------------------------------------------------------------
    def scripts(self, context: Context | None = None) -> Markup:
        """The client script tag and its settings."""
        ext = self.ext
        uid = current_user_id()
        token = csrf_token() if uid else None
        urls = self.urls()
        mode = ext.control.mode
        poll_interval = ext.app.config["NOTIFY_EMERGENCY_POLL_INTERVAL"]
        if context is None:
            return Markup(render_template(SCRIPTS_TEMPLATE, **self._script_values(urls, mode, poll_interval, uid, token)))
        template = self._template(SCRIPTS_TEMPLATE)
        key = (template, mode, uid is not None, poll_interval, tuple(urls.values()), current_locale())
        parts = self._scripts.get(key)
        if parts is None:
            if not self._shipped(template):
                return render_shared(template, context, self._script_values(urls, mode, poll_interval, uid, token))
            stand_in = TOKEN_STAND_IN if token else None
            html = str(render_shared(template, context, self._script_values(urls, mode, poll_interval, uid, stand_in)))
            head, found, tail = html.partition(f'"{TOKEN_STAND_IN}"')
            parts = (head, tail) if found else (html, None)
            if len(self._scripts) >= REUSED_SCRIPT_TAGS:
                self._scripts.clear()
            self._scripts[key] = parts
        before, after = parts
        if after is None:
            return Markup(before)
        if token is not None and _PLAIN_TOKEN.fullmatch(token):
            quoted = f'"{token}"'
        else:  # the template's ``tojson`` escaping
            quoted = str(htmlsafe_json_dumps(token, dumps=ext.app.json.dumps))
        return Markup(before + quoted + after)

    def _script_values(self, urls: dict[str, str], mode: str, poll_interval: float, uid: str | None,
                       token: str | None) -> dict[str, Any]:
        """What the script tag's template gets: its settings, URLs and the blueprint's name."""
        ext = self.ext
        settings = {
            "pollUrl": urls["poll"],
            "ackUrl": urls["ack"],
            "bannersUrl": urls["banners"],
            "pollInterval": poll_interval,
            "namespace": ext.namespace,
            "socket": ext.socketio is not None and isinstance(ext.notifier, SocketIONotifier),
            "mode": mode,
            "csrfToken": token,
            "loggedIn": uid is not None,
            "ackCookie": ext.ack_cookie,
            "toastSeconds": ext.app.config["NOTIFY_EMERGENCY_TOAST_SECONDS"],
            "strings": client_strings(),
        }
        return {"settings": settings, "bp": ext.blueprint_name, "urls": urls}

    def urls(self) -> dict[str, str]:
        """URLs of the client API and static files, built once per script root.

        Built afresh on every call when the host's ``url_defaults`` or host/subdomain
        matching can make them differ between requests.
        """
        app = self.ext.app
        bp = self.ext.blueprint_name
        key = request.script_root if has_request_context() else None
        urls = self._urls.get(key) if key is not None else None
        if urls is not None:
            return urls
        urls = {
            "poll": url_for(f"{bp}.poll"),
            "ack": url_for(f"{bp}.ack"),
            "banners": url_for(f"{bp}.banners"),
            "css": url_for(f"{bp}.static", filename="notify-emergency.css"),
            "socketio": url_for(f"{bp}.static", filename="vendor/socket.io.min.js"),
            "client": url_for(f"{bp}.static", filename="client.js"),
        }
        varies = (app.url_map.host_matching or app.subdomain_matching
                  or any(app.url_default_functions.get(name) for name in (None, bp)))
        # the cap keeps a proxy that forwards arbitrary prefixes from growing the dict
        if key is not None and not varies and len(self._urls) < 32:
            self._urls[key] = urls
        return urls

    def _template(self, name: str) -> Template:
        """``get_template``, kept here unless Jinja reloads templates (debug), saving its lookup."""
        env = self._env
        if env is None:  # the app's is a cached property, but even its lookup costs
            env = self._env = self.ext.app.jinja_env
        if env.auto_reload:
            return env.get_template(name)
        template = self._templates.get(name)
        if template is None:
            template = self._templates[name] = env.get_template(name)
        return template

    def _shipped(self, template: Template) -> bool:
        """Is this the extension's own partial (not one the host overrides)?"""
        filename = template.filename
        if not filename:  # a template built from a string has no file
            return False
        return os.path.normpath(filename).startswith(self._shipped_dir)


def client_strings() -> dict[str, str]:
    """Every text the client script shows, in the user's language (the script has none of its own)."""
    return {
        "modePaused": gettext("Live notifications are paused."),
        "modeEmergency": gettext("You will still get every notification: they appear here when you "
                                 "load a page, and within seconds while this page is open."),
        "modeLegacy": gettext("You will still get every notification: they appear here when you load a page."),
        "notifications": gettext("Notifications"),
        "dismiss": gettext("Dismiss"),
        "dismissTitled": gettext("Dismiss: %(title)s", title="{title}"),
        "open": gettext("Open"),
    }


def render_shared(template: Template, context: Context, values: dict[str, Any]) -> Markup:
    """Render ``template`` as ``{% include %}`` would from the page whose ``context`` this is."""
    shared = template.new_context({**context.get_all(), **values}, shared=True)
    try:
        return Markup(template.environment.concat(template.root_render_func(shared)))
    except Exception:
        template.environment.handle_exception()  # raises, pointing at the template's line
        raise


def render_banners(ext_state: Any, context: Context | None = None) -> Markup:
    """HTML for the active banners of ``ext_state``'s app (see :meth:`PageHelpers.banners`)."""
    return ext_state.page_helpers.banners(context)


def render_scripts(ext_state: Any, context: Context | None = None) -> Markup:
    """The client script tag of ``ext_state``'s app (see :meth:`PageHelpers.scripts`)."""
    return ext_state.page_helpers.scripts(context)

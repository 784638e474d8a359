"""The words users read, in their language.

Every user-facing string of the extension (banners, the emergency notice, toasts, flashes,
the public status page) goes through :func:`gettext` here. When the host uses Flask-Babel,
the string is looked up in the extension's own catalogue (domain ``flask_notify_emergency``,
shipped in ``translations/``) for the locale the host's Flask-Babel selects; a host's own
catalogue is never needed. Without Flask-Babel (or outside a request) the text stays English,
and Flask-Babel is never required.

Strings defined at import time use :func:`lazy_gettext`: they are translated when shown.
The admin dashboard and the command line stay English (see ``docs/translations.md``).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from flask import current_app, has_request_context

_babel: Any
try:  # optional: only a host that uses Flask-Babel gets translations
    _babel = importlib.import_module("flask_babel")
except ImportError:  # Flask-Babel is not installed: everything stays English
    _babel = None

#: The gettext domain of the extension's catalogue (``<DOMAIN>.pot``, ``<lang>/LC_MESSAGES/<DOMAIN>.mo``).
DOMAIN = "flask_notify_emergency"
#: Where the catalogue and its translations are shipped (inside the package, so in the wheel too).
TRANSLATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "translations")

# one Domain for every app: it only caches the compiled catalogues, which are the same for all
_domain: Any = (_babel.Domain(translation_directories=[TRANSLATIONS_DIR], domain=DOMAIN)
                if _babel is not None else None)


def _babel_active() -> bool:
    """Does the current app use Flask-Babel, inside a request (where it knows a locale)?"""
    return (_domain is not None and has_request_context()
            and "babel" in current_app.extensions)


def gettext(string: str, **variables: Any) -> str:
    """``string`` in the current user's language (English without Flask-Babel), with
    ``%(name)s`` placeholders filled from ``variables``."""
    if _babel_active():
        return str(_domain.gettext(string, **variables))
    return string % variables if variables else string


def N_(string: str) -> str:
    """Marks ``string`` for the catalogue without translating it (it is stored, and translated
    with :func:`gettext` when shown)."""
    return string


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    """:func:`gettext` with a plural form chosen by ``num`` (available as ``%(num)d``)."""
    if _babel_active():
        return str(_domain.ngettext(singular, plural, num, **variables))
    variables.setdefault("num", num)
    return (singular if num == 1 else plural) % variables


class LazyText:
    """A string translated each time it is shown (for text defined at import time)."""

    __slots__ = ("message", "variables")

    def __init__(self, message: str, **variables: Any) -> None:
        self.message = message
        self.variables = variables

    def __str__(self) -> str:
        return gettext(self.message, **self.variables)

    def __repr__(self) -> str:
        return f"LazyText({self.message!r})"


def lazy_gettext(string: str, **variables: Any) -> LazyText:
    """``string``, translated when it is turned into text (``str()``, a template, JSON)."""
    return LazyText(string, **variables)


def current_locale() -> str | None:
    """The locale of this request when the host uses Flask-Babel (``"de"``), else None.

    Output reused between pages (the page helpers) is keyed by it.
    """
    if not _babel_active():
        return None
    locale = _babel.get_locale()
    return str(locale) if locale is not None else None


def html_lang() -> str:
    """The language of the extension's own pages, for ``<html lang>``."""
    locale = current_locale()
    if locale is None:
        return "en"
    return locale.replace("_", "-")


def available_languages() -> list[str]:
    """Languages the extension ships a compiled translation for (besides English)."""
    try:
        names = sorted(os.listdir(TRANSLATIONS_DIR))
    except OSError:
        return []
    return [name for name in names
            if os.path.exists(os.path.join(TRANSLATIONS_DIR, name, "LC_MESSAGES", DOMAIN + ".mo"))]


#: Banners the extension posts itself carry a title from its catalogue (stored in English);
#: these kinds have it translated when shown. Any other title is the author's own text.
TRANSLATED_BANNER_KINDS = frozenset({"status"})


def banner_title(banner: dict[str, Any]) -> str | None:
    """The title of ``banner`` as this user reads it."""
    title = banner.get("title")
    if title and banner.get("kind") in TRANSLATED_BANNER_KINDS:
        return gettext(title)
    return title


def shown_banners(banners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``banners`` as JSON for this user: titles of the extension's own banners translated."""
    return [dict(b, title=banner_title(b)) if b.get("kind") in TRANSLATED_BANNER_KINDS else b
            for b in banners]


def template_globals() -> dict[str, Any]:
    """What the extension's templates use to translate (``{% set _ = notify_emergency_gettext %}``)."""
    return {"notify_emergency_gettext": gettext, "notify_emergency_ngettext": ngettext,
            "notify_emergency_banner_title": banner_title, "notify_emergency_lang": html_lang}

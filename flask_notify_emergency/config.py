"""Every ``NOTIFY_EMERGENCY_*`` setting: its default, its meaning and its validation.

The table :data:`SETTINGS` is the single source; the README's configuration table is
rendered from it (``python -m flask_notify_emergency.config``).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

PREFIX = "NOTIFY_EMERGENCY_"
PRIORITIES = ("low", "normal", "high", "critical")
MODES = ("normal", "emergency", "legacy")
BANNER_LEVELS = ("info", "warning", "danger", "critical")
#: The years a banner's start and end may fall in (every database stores them; no overflow).
BANNER_YEARS = (1970, 9998)


class ConfigError(ValueError):
    """A ``NOTIFY_EMERGENCY_*`` setting has a value the extension cannot use."""


@dataclass(frozen=True)
class Setting:
    """One configuration key: default, description and a checker returning an error or None."""

    name: str
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return "must be a number greater than 0"
    return None


def _non_negative_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be a whole number of 0 or more"
    return None


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be a whole number of 1 or more"
    return None


def _at_most(limit: int, why: str) -> Callable[[Any], str | None]:
    """A whole number from 1 to ``limit`` (what the column holding it can store)."""
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            return f"must be a whole number from 1 to {limit} ({why})"
        return None
    return check


def _fraction(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        return "must be a fraction between 0 (exclusive) and 1"
    return None


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


def _optional_str(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "must be a string or None"


def _str(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty string"


def _optional_callable(value: Any) -> str | None:
    return None if value is None or callable(value) else "must be a callable or None"


def _url_prefix(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith("/") or value.endswith("/"):
        return "must start with '/' and not end with '/', e.g. '/emergency'"
    return None


def _state_backend(value: Any) -> str | None:
    return None if value in ("auto", "memory", "redis") else "must be 'auto', 'memory' or 'redis'"


def _priority_map(value: Any) -> str | None:
    if not isinstance(value, dict) or set(value) != set(PRIORITIES):
        return f"must be a dict with exactly the keys {', '.join(PRIORITIES)}"
    return None


def _str_list(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return "must be a list of strings"
    return None


def _cookie_name(value: Any) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        return "must be 1 to 64 letters, digits, '_' or '-'"
    return None


SMTP_SECURITY = ("none", "starttls", "tls")


def _smtp_security(value: Any) -> str | None:
    if value not in SMTP_SECURITY:
        return f"must be one of {', '.join(map(repr, SMTP_SECURITY))}"
    return None


def apprise_problem(url: str) -> str | None:
    """Why Apprise cannot use ``url`` (no apprise package, or no service of its own that
    understands it), or None."""
    try:
        import apprise
    except ImportError:
        return "needs the apprise package: pip install 'flask-notify-emergency[apprise]'"
    if not isinstance(url, str) or "://" not in url or apprise.Apprise.instantiate(url) is None:
        return (f"{url!r} is not an Apprise URL Apprise can use: see the service's URL form at "
                "https://github.com/caronc/apprise/wiki, e.g. json://alerts.example.com/hook")
    return None


def _apprise_urls(value: Any) -> str | None:
    problem = _str_list(value)
    if problem:
        return problem
    for url in value:
        problem = apprise_problem(url)
        if problem:
            return "has an entry that " + problem if problem.startswith("needs") else f"has {problem}"
    return None


def _str_dict(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (list, tuple)) for k, v in value.items()
    ):
        return "must be a dict of name -> argv list"
    return None


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # --- delivery -------------------------------------------------------------------------
    S("TITLE_MAX_LENGTH", 200, "Longest notification title accepted by `send()` (at most 500, its column's size).",
      _at_most(500, "the title column holds 500 characters")),
    S("MESSAGE_MAX_LENGTH", 5000, "Longest notification message accepted by `send()` (at most 16000: MariaDB's `TEXT` column holds 65,535 bytes, 4 per character at most).",
      _at_most(16000, "MariaDB's TEXT column holds 65,535 bytes, up to 4 per character")),
    S("CATEGORY_MAX_LENGTH", 64, "Longest category name accepted by `send()` (at most 64, its column's size).",
      _at_most(64, "the category column holds 64 characters")),
    S("ACK_TIMEOUT", 5.0, "Seconds to wait for the browser's acknowledgement before falling back.", _positive_number),
    S("NOTIFIER_TIMEOUT", 2.0, "Seconds the primary notifier (a host `notifier=` callable, or an emit through Socket.IO's message queue) may take before it counts as failed.", _positive_number),
    S("FLASH_BATCH_SIZE", 3, "Pending notifications flashed per page request (keeps the session cookie small).", _positive_int),
    S("FLASH_MESSAGE_MAX_LENGTH", 300, "A flashed notification's text is cut to this many characters.", _positive_int),
    S("FLASH_CATEGORIES", {"low": "info", "normal": "info", "high": "warning", "critical": "danger"},
      "Flash category used for each priority.", _priority_map),
    S("FLASH_SKIP_ENDPOINTS", [], "Endpoints whose responses never get pending notifications flashed into them (e.g. `'auth.logout'`, a file download).", _str_list),
    S("ACK_COOKIE_NAME", "notify_emergency_acks", "Cookie (the ack outbox) holding ids of notifications the browser showed and the server has not confirmed yet: the client script's socket and poll acknowledgements, and the flashes of a page; the next request carries them.", _cookie_name),
    S("CLAIM_CONFIRM_TIMEOUT", 30.0, "Seconds a notification offered by a flash or a poll waits for the browser's confirmation that it was shown; unconfirmed by then, it is offered again (the client script drops a copy it already showed).", _positive_number),
    S("POLL_INTERVAL", 5.0, "Seconds between polls by the client script while its socket is down.", _positive_number),
    S("POLL_INTERVAL_MAX", 60.0, "Ceiling of the poll interval the server hands the client script: it raises `POLL_INTERVAL` by `POLL_BACKOFF_FACTOR` in emergency (or legacy) mode and once more for each monitor check in a row that found the system overloaded, up to this.", _positive_number),
    S("POLL_BACKOFF_FACTOR", 2.0, "Factor the poll interval is raised by per step (emergency or legacy mode is one step, each overloaded monitor check in a row another); 1 keeps it at `POLL_INTERVAL`.", lambda v: None if not isinstance(v, bool) and isinstance(v, (int, float)) and v >= 1 else "must be a number of at least 1"),
    S("POLL_BATCH_SIZE", 20, "Notifications returned by one poll.", _positive_int),
    S("TOAST_SECONDS", 15.0, "Shortest time a low or normal priority toast stays on screen (longer for long text, paused while pointed at or focused); high and critical ones stay until dismissed.", _positive_number),
    S("DEFAULT_EXPIRY", None, "Seconds after which an undelivered notification expires (None: never).", None),
    S("SOCKETIO_NAMESPACE", "/notify-emergency", "Socket.IO namespace of user notifications (its own, so the host's handlers on '/' stay untouched).", _str),
    S("ADMIN_NAMESPACE", "/notify-emergency-admin", "Socket.IO namespace of the dashboard's live updates (admins only).", _str),
    S("USER_ROOM_PREFIX", "user:", "Prefix of the per-user Socket.IO room.", _str),
    # --- circuit breaker ------------------------------------------------------------------
    S("BREAKER_FAILURE_RATE", 0.5, "Failure rate of the real-time path that opens the breaker.", _fraction),
    S("BREAKER_MIN_CALLS", 10, "Calls needed in the window before the failure rate can open the breaker.", _positive_int),
    S("BREAKER_WINDOW", 60.0, "Seconds of calls the failure rate is computed over.", _positive_number),
    S("BREAKER_OPEN_SECONDS", 30.0, "Seconds the breaker stays open before letting probes through.", _positive_number),
    S("BREAKER_PROBES", 3, "Calls let through while half-open.", _positive_int),
    S("BREAKER_CLOSE_AFTER", 3, "Successful probes that close the breaker again.", _positive_int),
    # --- shared state ---------------------------------------------------------------------
    S("STATE_BACKEND", "auto", "'memory', 'redis', or 'auto' (redis when `REDIS_URL` is set).", _state_backend),
    S("REDIS_URL", None, "Redis for cluster-wide state and pub/sub, e.g. 'redis://127.0.0.1:6379/0'.", _optional_str),
    S("REDIS_KEY_PREFIX", "notify_emergency", "Prefix of every Redis key and channel the extension uses.", _str),
    S("STATE_REFRESH_SECONDS", 2.0, "How often a worker re-reads mode and pending users from the database "
      "when pub/sub cannot tell it (memory backend, or Redis down).", _positive_number),
    S("SWEEP_SECONDS", 5.0, "How often unacknowledged notifications are handed to the fallbacks.", _positive_number),
    S("DATABASE_POOL_SIZE", 10, "Connections to the host's database (MariaDB, PostgreSQL) each worker opens once and keeps "
      "for the extension's own statements (sends, acknowledgements, claims), none opened beyond them: "
      "busy threads wait for one instead of opening and closing more. "
      "The host's `SQLALCHEMY_ENGINE_OPTIONS` apply otherwise. 0: use the host's engine and its pool (always so on SQLite).",
      _non_negative_int),
    # --- identity and access --------------------------------------------------------------
    S("IS_ADMIN", None, "Callable `(user) -> bool`; default: `user.is_admin` or an 'admin' role.", _optional_callable),
    S("ADMIN_USER_IDS", None, "Callable `() -> list of ids` of admins (used for `--target admins`).", _optional_callable),
    S("ALL_USER_IDS", None, "Callable `() -> iterable of ids` of every user; with it, `send-notification --target all` sends each one a notification (`send_many`) instead of posting a banner.", _optional_callable),
    S("URL_PREFIX", "/emergency", "URL prefix of the admin dashboard and the client API.", _url_prefix),
    S("BLUEPRINT_NAME", "notify_emergency", "Name of the extension's blueprint.", _str),
    S("CLI_GROUP", "emergency", "Name of the `flask` command group (None: no CLI).", _optional_str),
    S("BASE_TEMPLATE", "notify_emergency/base.html", "Template the dashboard pages extend.", _str),
    S("LOG_FILE", None, "File the `flask emergency` commands append their full log to, tracebacks included (default: `<instance_path>/notify-emergency.log`; the system temp directory, with a note, when that is not writable).", _optional_str),
    S("DASHBOARD_REFRESH_SECONDS", 5.0, "Seconds between the dashboard's live pushes (and its polls while the admin socket is down).", _positive_number),
    S("LOGIN_VIEW", None, "Endpoint anonymous admins are sent to (default: Flask-Login's `login_view`).", _optional_str),
    # --- health, classification, recovery -------------------------------------------------
    S("HEALTH_CHECK_TIMEOUT", 2.0, "Seconds any single health check may take.", _positive_number),
    S("HEALTH_ANSWER_TIMEOUT", 3.0, "Seconds a database or Redis check that timed out gets to show the server answers at all (the check's own late answer, or a fresh connection's first reply): an answer in that time is overload (level 3, real-time delivery stays on), none is an outage.", _positive_number),
    S("READYZ_STRICT", False, "`<prefix>/readyz` also needs every table and column of the extension (503 naming what is missing and the command that fixes it).", _bool),
    S("CANARY_TIMEOUT", 2.0, "Seconds the end-to-end canary may take to arrive.", _positive_number),
    S("DELIVERY_FAILURE_RATE", 0.10, "Delivery failure rate that counts as an emergency.", _fraction),
    S("DELIVERY_MIN_SAMPLE", 20, "Deliveries needed before the failure rate is judged.", _positive_int),
    S("DISCONNECT_RATIO", 0.5, "Share of recently active users without a socket that counts as an emergency.", _fraction),
    S("MEMORY_LIMIT_MB", 2048, "Process memory (RSS) above which resources count as exhausted.", _positive_int),
    S("DISK_MIN_FREE_MB", 200, "Free disk below which resources count as exhausted.", _positive_int),
    S("BACKLOG_MAX_AGE", 300, "Seconds the oldest undelivered notification may wait before delivery counts as failing.", _positive_int),
    S("ACTIVITY_WINDOW", 300, "Seconds of recent deliveries and connections the failure rate and the disconnect ratio are judged over.", _positive_int),
    S("DISCONNECT_MIN_USERS", 5, "Connected users (at the recent peak) needed before the disconnect ratio is judged.", _positive_int),
    S("MONITOR_ACTIVATE_LEVEL", 2, "The monitor switches emergency mode on for levels 1 up to this; less severe findings open an event and alert only.", lambda v: None if v in (1, 2, 3, 4) and not isinstance(v, bool) else "must be 1, 2, 3 or 4"),
    S("MONITOR_ENABLED", True, "Run the background monitor (one per cluster) in the app.", _bool),
    S("MONITOR_INTERVAL", 15.0, "Seconds between the monitor's health checks.", _positive_number),
    S("START_ON_BOOT", True, "Start the background work (monitor, acknowledgement sweeper) when the app is created in a serving process, not on its first request; `flask` commands never start it (`flask emergency monitor` runs the monitor on purpose).", _bool),
    S("READYZ_REQUIRE_MONITOR", False, "Strict readiness: `readyz` answers 503 while no monitor has beaten for three intervals.", _bool),
    S("OPERATOR_HOLD", 900.0, "Seconds after an operator's `restore`, `deactivate-emergency` or `enable-fallback` during which the monitor neither activates emergency mode nor rolls back, unless a more severe failure appears.", _positive_number),
    S("RECOVERY_ATTEMPTS", 3, "Attempts of a recovery plan before it escalates.", _positive_int),
    S("RECOVERY_BACKOFF", 1.0, "Seconds before the first retry of a recovery action (doubles each time).", _positive_number),
    S("HEALTHY_CHECKS_TO_RECOVER", 3, "Healthy checks in a row needed to leave emergency mode.", _positive_int),
    S("REPLAY_RATE", 50, "Backlog notifications redelivered per second after recovery.", _positive_int),
    S("SERVICE_COMMANDS", {}, "Operator commands by name: {'restart-web': ['systemctl', 'restart', 'web']}.", _str_dict),
    S("SERVICE_COMMAND_TIMEOUT", 30.0, "Seconds an operator command may run.", _positive_number),
    # --- alerts ---------------------------------------------------------------------------
    S("ALERT_EMAILS", [], "Addresses that receive emergency alerts by email.", _str_list),
    S("ALERT_SMS_NUMBERS", [], "Phone numbers that receive emergency alerts by SMS.", _str_list),
    S("ALERT_WEBHOOKS", [], "URLs that receive emergency alerts as JSON POSTs.", _str_list),
    S("SMTP_HOST", "localhost", "Mail server for email alerts.", _str),
    S("SMTP_PORT", 25, "Mail server port.", _positive_int),
    S("SMTP_SENDER", "notify-emergency@localhost", "From address of email alerts.", _str),
    S("SMTP_SECURITY", "none", "`none`, `starttls` (upgrade a plain connection, usually port 587; refused if the server cannot) or `tls` (implicit TLS, usually port 465).", _smtp_security),
    S("SMTP_USERNAME", None, "Login name for the mail server (needs `SMTP_PASSWORD` and `SMTP_SECURITY` `starttls` or `tls`).", _optional_str),
    S("SMTP_PASSWORD", None, "Password for `SMTP_USERNAME`.", _optional_str),
    S("SMTP_CA_FILE", None, "PEM file of the CA(s) that sign the mail server's certificate (default: the system's CAs).", _optional_str),
    S("ALERT_APPRISE_URLS", [], "Apprise URLs (Slack, Teams, PagerDuty, Opsgenie, ntfy, Matrix, …) that receive emergency alerts; needs `pip install flask-notify-emergency[apprise]`.", _apprise_urls),
    S("SMS_GATEWAY_URL", None, "HTTP endpoint of the SMS gateway (JSON POST {to, message}).", _optional_str),
    S("ALERT_TIMEOUT", 5.0, "Seconds one alert delivery (SMTP, SMS gateway, webhook) may take.", _positive_number),
    S("ALERT_COOLDOWN", 300.0, "Seconds during which a repeated alert for the same event is suppressed.", _positive_number),
    # --- rollback and backups -------------------------------------------------------------
    S("BACKUP_DIR", None, "Where backups are written (default: `<instance_path>/notify_emergency_backups`).", _optional_str),
    S("ROLLBACK_BACKUP_MAX_AGE", 3600, "Seconds a verified backup stays fresh enough for `verify-rollback-ready`.", _positive_int),
    S("PLANNED_ROLLBACK_APPROVALS", 1, "Second-admin approvals a planned rollback needs (0: none).", _non_negative_int),
    S("AUTO_ROLLBACK", False, "Roll back automatically after the recovery plan failed, or a long critical emergency.", _bool),
    S("AUTO_ROLLBACK_AFTER", 1800, "Seconds a critical emergency may last before an automatic rollback.", _positive_int),
    S("METRICS_TOKEN", None, "Bearer token that lets Prometheus scrape `<prefix>/metrics` without an admin session (`Authorization: Bearer <token>`); unset: admins only.", _optional_str),
    S("TEST_PAGES", ["/"], "URLs fetched by `test-pages` and `verify-rollback`.", _str_list),
    S("TEST_USER_ID", None, "User id that receives the test notification of `verify-rollback`.", _optional_str),
)

BY_NAME = {s.name: s for s in SETTINGS}


def apply_defaults(config: dict[str, Any], instance_path: str) -> None:
    """``setdefault`` every key on the app's config."""
    for setting in SETTINGS:
        default = setting.default
        if isinstance(default, (dict, list)):
            default = type(default)(default)
        config.setdefault(PREFIX + setting.name, default)
    if config[PREFIX + "BACKUP_DIR"] is None:
        config[PREFIX + "BACKUP_DIR"] = os.path.join(instance_path, "notify_emergency_backups")


def validate(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first bad key and how to fix it."""
    for setting in SETTINGS:
        key = PREFIX + setting.name
        value = config[key]
        if setting.check is None:
            continue
        problem = setting.check(value)
        if problem:
            raise ConfigError(f"{key} {problem}; got {value!r}.")
    expiry = config[PREFIX + "DEFAULT_EXPIRY"]
    if expiry is not None and _positive_number(expiry):
        raise ConfigError(f"{PREFIX}DEFAULT_EXPIRY must be None or a number of seconds; got {expiry!r}.")
    if bool(config[PREFIX + "SMTP_USERNAME"]) != bool(config[PREFIX + "SMTP_PASSWORD"]):
        raise ConfigError(f"{PREFIX}SMTP_USERNAME and {PREFIX}SMTP_PASSWORD go together: set both "
                          "to log in to the mail server, or neither.")
    if config[PREFIX + "SMTP_USERNAME"] and config[PREFIX + "SMTP_SECURITY"] == "none":
        raise ConfigError(f"{PREFIX}SMTP_USERNAME is set but {PREFIX}SMTP_SECURITY is 'none', which would "
                          "send the password in clear: set it to 'starttls' or 'tls'.")
    if _positive_number(config[PREFIX + "POLL_INTERVAL"]) is None and \
            config[PREFIX + "POLL_INTERVAL_MAX"] < config[PREFIX + "POLL_INTERVAL"]:
        raise ConfigError(f"{PREFIX}POLL_INTERVAL_MAX ({config[PREFIX + 'POLL_INTERVAL_MAX']!r}) is less than "
                          f"{PREFIX}POLL_INTERVAL ({config[PREFIX + 'POLL_INTERVAL']!r}): the ceiling must be "
                          "at least the normal interval.")
    if config[PREFIX + "STATE_BACKEND"] == "redis" and not config[PREFIX + "REDIS_URL"]:
        raise ConfigError(
            f"{PREFIX}STATE_BACKEND is 'redis' but {PREFIX}REDIS_URL is not set: "
            "set it, e.g. 'redis://127.0.0.1:6379/0'."
        )


SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "URI", "URL", "DSN")
#: Words that make a query parameter, a command-line option or an ``X=Y`` argument a secret.
SECRET_PARTS = ("password", "passwd", "pwd", "secret", "token", "key", "auth", "credential",
                "signature", "sig")
#: Webhook addresses whose path is itself the credential: (host suffix, path prefix kept).
TOKEN_PATH_WEBHOOKS = (("hooks.slack.com", "/services/"), ("hooks.slack.com", "/workflows/"),
                       ("discord.com", "/api/webhooks/"), ("discordapp.com", "/api/webhooks/"),
                       ("webhook.office.com", "/webhookb2/"), ("chat.googleapis.com", "/v1/spaces/"),
                       ("api.telegram.org", "/bot"))
REDACTED = "***"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
#: A path segment that looks like a generated token: long, letters and digits mixed.
_TOKEN_SEGMENT = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-.~]{20,}$")


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """The extension's settings with anything that may hold a credential redacted."""
    out: dict[str, Any] = {}
    for key, value in sorted(config.items()):
        if not key.startswith(PREFIX):
            continue
        out[key] = redact_value(key, value)
    return out


def _names_secret(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_PARTS)


def redact_value(key: str, value: Any) -> Any:
    """Redact a value whose key names a secret, and every credential inside any value: URLs
    (in strings, lists and dicts), secret query parameters, tokens in webhook paths, and
    secret options of command lines (``SERVICE_COMMANDS``)."""
    if callable(value):
        return f"<callable {getattr(value, '__name__', type(value).__name__)}>"
    if "APPRISE" in key.upper() and isinstance(value, (list, tuple)):
        return [redact_apprise_url(str(v)) for v in value]
    if any(word in key.upper() for word in SECRET_WORDS if word not in ("URL", "URI")) and \
            value and not isinstance(value, (dict, list, tuple, bool, int, float)):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _names_secret(k) and isinstance(v, str) and v
                    else redact_value(str(k), v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return redact_arguments(list(value))
        return [redact_value(key, v) for v in value]
    return value


def redact_text(text: str) -> str:
    """Every URL in ``text`` redacted (:func:`redact_url`)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def redact_arguments(args: list[str]) -> list[str]:
    """A command line with its secrets redacted: ``--password=x``, ``--token x``, ``-u user:pw``,
    ``PASSWORD=x``, ``Authorization: Bearer x``, and credentials in URLs."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            hide_next = False
            if out and out[-1] in ("-u", "--user"):  # curl's user[:password]
                out.append(arg.split(":", 1)[0] + ":" + REDACTED if ":" in arg else arg)
            else:
                out.append(REDACTED)
            continue
        name, eq, value = arg.partition("=")
        header, colon, header_value = arg.partition(":")
        if arg.startswith("-") and not eq and (_names_secret(arg) or arg in ("-u", "--user")):
            out.append(arg)
            hide_next = True
        elif eq and "://" not in name and _names_secret(name) and value:
            out.append(f"{name}={REDACTED}")
        elif colon and "://" not in arg and header.strip().lower() in ("authorization", "proxy-authorization",
                                                                      "x-api-key", "api-key"):
            out.append(f"{header}: {REDACTED}")
        else:
            out.append(redact_text(arg))
    return out


def redact_url(url: str) -> str:
    """A URL without its credentials: ``scheme://user:***@host``, ``scheme://***@host`` for a
    user part alone (often a token), secret query parameters as ``***``, and the token in a
    webhook path (Slack's ``hooks.slack.com/services/…``, Discord's, Teams', or any long
    generated-looking path segment) as ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not a URL we can take apart: hide everything after the scheme
        scheme, sep, _ = url.partition("://")
        return f"{scheme}{sep}{REDACTED}"
    netloc = parts.netloc
    if "@" in netloc:
        creds, _, host = netloc.rpartition("@")
        user, colon, _ = creds.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if colon else f"{REDACTED}@{host}"
    path = parts.path
    host_name = (parts.hostname or "").lower()
    kept = next((prefix for suffix, prefix in TOKEN_PATH_WEBHOOKS
                 if (host_name == suffix or host_name.endswith("." + suffix)) and path.startswith(prefix)), None)
    if kept is not None:
        path = kept + REDACTED
    else:
        path = "/".join(REDACTED if _TOKEN_SEGMENT.match(seg) else seg for seg in path.split("/"))
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{urllib.parse.quote(k, safe='[]')}={REDACTED if _names_secret(k) and v else urllib.parse.quote(v, safe='/:,')}"
                         for k, v in pairs)
    fragment = parts.fragment
    if fragment and ("=" in fragment or _TOKEN_SEGMENT.match(fragment)):
        fragment = REDACTED
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, fragment))


def redact_apprise_url(url: str) -> str:
    """An Apprise URL with its tokens and passwords masked (Apprise's own privacy view);
    only the scheme when Apprise is missing or cannot read it."""
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url)
        if plugin is not None:
            return str(plugin.url(privacy=True)).split("?", 1)[0]
    except ImportError:
        pass
    return url.partition("://")[0] + "://***"


def markdown_table() -> str:
    """The configuration table for the README."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default!r}`".replace("|", "\\|")
        doc = s.doc.replace("|", "\\|")
        rows.append(f"| `{PREFIX}{s.name}` | {default} | {doc} |")
    return "\n".join(rows)


TABLE_START, TABLE_END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the config-table markers replaced by the table."""
    head, _, rest = readme.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n{markdown_table()}\n{TABLE_END}{tail}"


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--write-readme":
        with open(sys.argv[2], encoding="utf-8") as fh:
            text = fh.read()
        with open(sys.argv[2], "w", encoding="utf-8") as fh:
            fh.write(readme_with_table(text))
    else:
        print(markdown_table())

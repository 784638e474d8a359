"""How every ``flask emergency`` command runs: where its log goes, ``--verbose``, and what an
operator sees when something breaks.

An operator's terminal gets one line per problem: what failed, where, and what to do. The
full story (tracebacks, the libraries' own warnings) goes to the log file
(``NOTIFY_EMERGENCY_LOG_FILE``), and to the terminal too with ``--verbose``.

* While a command runs, the extension's logger and the libraries it drives (Socket.IO,
  Engine.IO, redis, SQLAlchemy) write to the log file; errors of the extension's own logger
  are also echoed to stderr, one line each.
* Before a command touches anything it checks that the database answers. When it does not,
  the command says so in one line and exits 1; ``status`` still shows what it can read
  without it (see :data:`RUNS_WITHOUT_DATABASE`).
* An unexpected exception becomes one line (``Error: ...``, exit 1) naming the log that
  holds its trace; with ``--verbose`` the trace is printed as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import traceback
from typing import Any, Iterator

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import ScriptInfo

from ..audit import cli_actor
from ..config import redact_url
from .output import EXIT_FAILED, to_json

log = logging.getLogger("flask_notify_emergency")

#: Loggers whose records go to the log file while a command runs.
LOGGERS = ("flask_notify_emergency", "socketio", "engineio", "socketio.client", "socketio.server",
           "engineio.client", "engineio.server", "redis", "sqlalchemy", "werkzeug")
#: Commands that still show what they can when the database is down (and exit 1 after).
RUNS_WITHOUT_DATABASE = frozenset({"status"})
#: Long-running commands (a monitor process for systemd or Kubernetes): they must start and
#: keep running while the database is down, and their log goes to stderr in full, as a
#: service manager collects it (and to the log file).
LONG_RUNNING = frozenset({"monitor"})
#: ``ctx.meta`` key: the command runs with ``--verbose``.
VERBOSE = "notify_emergency.verbose"
#: ``ctx.meta`` key: the database's one-line error when it was found unreachable.
DATABASE_DOWN = "notify_emergency.database_down"
#: ``ctx.meta`` key: the log file this command writes to.
LOG_PATH = "notify_emergency.log_path"


class OneLineFormatter(logging.Formatter):
    """A record as one line: its message's first line, plus the exception's type and text."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            first = str(exc).splitlines()[0] if str(exc) else ""
            text += f" ({type(exc).__name__}: {first})" if first else f" ({type(exc).__name__})"
        return f"{record.levelname.lower()}: {text}"


def log_path(app: Flask) -> tuple[str, str | None]:
    """The command log's path, and a note when the configured one is not writable."""
    wanted = app.config.get("NOTIFY_EMERGENCY_LOG_FILE") or os.path.join(app.instance_path, "notify-emergency.log")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(wanted)), exist_ok=True)
        with open(wanted, "a", encoding="utf-8"):
            pass
        return wanted, None
    except OSError as exc:
        fallback = os.path.join(tempfile.gettempdir(), "notify-emergency.log")
        return fallback, (f"cannot write the log {wanted} ({exc.strerror or exc}); logging to {fallback} "
                          "instead (set NOTIFY_EMERGENCY_LOG_FILE to a writable file)")


@contextlib.contextmanager
def command_logging(app: Flask | None, verbose: bool) -> Iterator[str | None]:
    """Route the loggers to the log file (and stderr) for the length of one command."""
    handlers: list[logging.Handler] = []
    path: str | None = None
    if app is not None:
        path, note = log_path(app)
        if note:
            click.echo(f"Note: {note}", err=True)
        file_handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter(
            f"%(asctime)s pid={os.getpid()} %(name)s %(levelname)s %(message)s"))
        handlers.append(file_handler)
    terminal = logging.StreamHandler(sys.stderr)
    if verbose:
        terminal.setLevel(logging.INFO)
        terminal.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    else:
        terminal.setLevel(logging.ERROR)
        terminal.setFormatter(OneLineFormatter())
        terminal.addFilter(lambda record: record.name.startswith("flask_notify_emergency"))
    handlers.append(terminal)
    saved: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        if name != "flask_notify_emergency" and "." in name:
            continue  # children reach their parent's handlers
        logger.handlers = list(handlers)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO if name in ("flask_notify_emergency", "socketio", "engineio")
                            else logging.WARNING)
    try:
        yield path
    finally:
        for logger, old_handlers, propagate, level in saved:
            logger.handlers = old_handlers
            logger.propagate = propagate
            logger.setLevel(level)
        for handler in handlers:
            handler.close()


def database_error(app: Flask) -> str | None:
    """None if the extension's database answers ``SELECT 1``, else one line saying it does not."""
    ext = app.extensions.get("notify_emergency")
    if ext is None:
        return None
    try:
        with app.app_context(), ext.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:
        return database_down_message(ext.engine, exc)


def database_down_message(engine: Any, exc: BaseException) -> str:
    """One line: the database is unreachable, where, why in short, and what to do."""
    cause = getattr(exc, "orig", None) or exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    where = redact_url(engine.url.render_as_string(hide_password=True)) if hasattr(engine, "url") else "?"
    return (f"the database is unreachable ({where}: {reason}); nothing was changed. Bring the database "
            "back (or fix SQLALCHEMY_DATABASE_URI), then run the command again.")


def _load_app(ctx: click.Context) -> Flask | None:
    if current_app:
        return current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        return ctx.ensure_object(ScriptInfo).load_app()
    except Exception:  # the app itself cannot load: let Flask's own error say why
        return None


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[VERBOSE] = True
    return value


class EmergencyCommand(click.Command):
    """A ``flask emergency`` command: ``--verbose``, its log, the database check, one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(
            ["--verbose", "-v"], is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
            help="Print the full log, tracebacks included, to the terminal as well as to the log file."))

    def invoke(self, ctx: click.Context) -> Any:
        verbose = bool(ctx.meta.get(VERBOSE)) or self.name in LONG_RUNNING
        as_json = bool(ctx.params.get("as_json"))
        app = _load_app(ctx)
        with command_logging(app, verbose) as path:
            ctx.meta[LOG_PATH] = path
            log.info("flask-notify-emergency: 'emergency %s' run by %s", self.name, cli_actor())
            if app is not None and self.name not in LONG_RUNNING:
                down = database_error(app)
                if down is not None:
                    log.info("flask-notify-emergency: %s: %s", self.name, down)
                    if self.name not in RUNS_WITHOUT_DATABASE:
                        _fail_line(down, as_json)
                    ctx.meta[DATABASE_DOWN] = down
            try:
                return super().invoke(ctx)
            except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, KeyboardInterrupt):
                raise
            except Exception as exc:
                log.exception("flask-notify-emergency: 'emergency %s' failed", self.name)
                down = database_error(app) if app is not None else None
                if verbose:
                    traceback.print_exc(file=sys.stderr)
                if down is not None:
                    _fail_line(down, as_json)
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                _fail_line(f"'emergency {self.name}' failed: {type(exc).__name__}: {first}. "
                           + (f"The full trace is in {path}; " if path else "")
                           + "run it again with --verbose to see it here.", as_json)


def _fail_line(message: str, as_json: bool) -> None:
    if as_json:
        click.echo(to_json({"ok": False, "error": message}))
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(EXIT_FAILED)

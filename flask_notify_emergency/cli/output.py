"""What every ``flask emergency`` command shares: the extension's state, who acts, how
results are printed (text or ``--json``), and the exit codes.

Exit codes are the same for every command:

* ``0``: done (or nothing needed doing),
* ``1``: the command ran but failed, or was refused (the message says why),
* ``2``: bad input; the message says which option to fix and how.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any, Callable, Iterable, NoReturn, TypeVar

import click
from click.core import ParameterSource
from flask import current_app

from ..audit import cli_actor
from ..respond import EmergencyError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: ``health-check`` only: some checks fail but nothing is critical.
EXIT_DEGRADED = 3

#: Every command's audit entries carry this source.
SOURCE = "cli"


def ext_state() -> Any:
    """The extension's per-app state of the app the command runs in."""
    try:
        return current_app.extensions["notify_emergency"]
    except KeyError:
        fail("NotifyEmergency is not registered on this app: call notify.init_app(app, db=db, "
             "socketio=socketio) in the app factory that --app points to.")


def actor(given: str | None = None) -> str:
    """The name written to the audit log: an explicit ``--triggered-by``/``--resolved-by``,
    else the OS user running the command."""
    if given is not None and given.strip():
        return given.strip()
    return cli_actor()


def json_option(func: F) -> F:
    """Add ``--json`` (print one JSON object instead of text)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON object instead of text.")(func)


def format_with_json_alias(fmt: str, as_json: bool) -> str:
    """The ``--format`` of a command that also takes ``--json`` (the same as ``--format json``,
    so every reporting command has ``--json``); exit 2 if the two disagree."""
    if not as_json:
        return fmt
    source = click.get_current_context().get_parameter_source("fmt")
    if fmt != "json" and source is not ParameterSource.DEFAULT:
        usage(f"--json and --format {fmt} disagree: give one of them.", "--json")
    return "json"


def _default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat() + ("Z" if isinstance(value, dt.datetime) and value.tzinfo is None else "")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json(data: Any) -> str:
    """JSON text of a command's result (datetimes as naive-UTC ISO with 'Z')."""
    return json.dumps(data, indent=2, sort_keys=True, default=_default)


def report(data: dict[str, Any], as_json: bool, lines: Iterable[str] | Callable[[], Iterable[str]]) -> None:
    """Print ``data`` as JSON, or the human-readable ``lines``."""
    if as_json:
        click.echo(to_json(data))
        return
    for line in (lines() if callable(lines) else lines):
        click.echo(line)


def fail(message: str, code: int = EXIT_FAILED, data: dict[str, Any] | None = None,
         as_json: bool = False) -> NoReturn:
    """Stop the command with ``message`` on stderr (and ``data`` as JSON on stdout)."""
    if as_json:
        payload = dict(data or {})
        payload.setdefault("ok", False)
        payload.setdefault("error", message)
        click.echo(to_json(payload))
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(code)


def usage(message: str, param: str | None = None) -> NoReturn:
    """Bad input: exit 2 with a message saying what to fix."""
    if param:
        raise click.BadParameter(message, param_hint=param)
    raise click.UsageError(message)


def done(ok: bool, code_if_failed: int = EXIT_FAILED) -> None:
    """Exit non-zero when ``ok`` is false (after the result was printed)."""
    if not ok:
        raise click.exceptions.Exit(code_if_failed)


def mark(ok: bool | None) -> str:
    """A short pass/fail/skip tag for tables."""
    return "ok  " if ok else ("skip" if ok is None else "FAIL")


def with_errors(func: F) -> F:
    """Turn ``ValueError`` (bad input) into exit 2 and service refusals into exit 1."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EmergencyError as exc:
            fail(str(exc), EXIT_FAILED, as_json=bool(kwargs.get("as_json")))
        except ValueError as exc:
            usage(str(exc))
    return wrapper  # type: ignore[return-value]

"""Is the database's schema the one our models declare, and what fixes it?

Our tables live on the host's ``db`` metadata, so the host creates them the way it creates its
own: ``db.create_all()``, or its migrations (Flask-Migrate's ``flask db migrate`` and
``flask db upgrade``, which also turn a later change to our tables into a new migration).
:func:`schema_problems` compares the live database with the models, table by table and column
by column, and names the command that fixes what it finds: the host's migration commands when
Flask-Migrate is registered on the app, else ``db.create_all()`` for missing tables and the
``ALTER TABLE`` statements for missing columns (``create_all`` never alters a table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateColumn


@dataclass(frozen=True)
class SchemaReport:
    """Missing tables and columns (``table.column``) of our models, and how to fix them."""

    dialect: str
    missing_tables: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return not self.missing_tables and not self.missing_columns

    def describe(self) -> str:
        """One line: what is missing and the command that fixes it."""
        if self.ok:
            return "every table and column present"
        parts = []
        if self.missing_tables:
            parts.append(f"tables missing: {', '.join(self.missing_tables)}")
        if self.missing_columns:
            parts.append(f"columns missing: {', '.join(self.missing_columns)}")
        return "; ".join(parts) + f" (fix: {self.fix})"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "missing_tables": self.missing_tables,
                "missing_columns": self.missing_columns, "fix": self.fix}


def migrate_command(app: Any) -> str | None:
    """The host's Flask-Migrate command group (``db`` unless renamed), or None without it."""
    registered = app.extensions.get("migrate")
    if registered is None:
        return None
    return str(getattr(getattr(registered, "migrate", None), "command", None) or "db")


def add_column_sql(table: sa.Table, column: sa.Column, dialect: sa.engine.Dialect) -> str:
    """``ALTER TABLE … ADD COLUMN …`` for one of our columns, in the database's dialect."""
    spec = str(CreateColumn(column).compile(dialect=dialect)).strip()
    return f"ALTER TABLE {table.name} ADD COLUMN {spec}"


def schema_problems(app: Any, engine: sa.engine.Engine, tables: list[sa.Table]) -> SchemaReport:
    """Compare ``tables`` with the live database (raises what the database raises)."""
    inspector = sa.inspect(engine)
    present = set(inspector.get_table_names())
    missing_tables = sorted(t.name for t in tables if t.name not in present)
    missing_columns: list[tuple[sa.Table, sa.Column]] = []
    for table in tables:
        if table.name not in present:
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing_columns += [(table, c) for c in table.columns if c.name not in have]
    report = SchemaReport(engine.dialect.name, missing_tables,
                          [f"{t.name}.{c.name}" for t, c in missing_columns])
    if report.ok:
        return report
    group = migrate_command(app)
    if group is not None:
        fix = f"flask {group} migrate -m 'notify-emergency schema', review the new migration, then flask {group} upgrade"
    else:
        steps = []
        if missing_tables:
            steps.append("db.create_all() in an app context")
        steps += [add_column_sql(t, c, engine.dialect) for t, c in missing_columns]
        fix = "; ".join(steps)
    return SchemaReport(report.dialect, report.missing_tables, report.missing_columns, fix)
